"""LoRA fine-tuning pieces, plain and Ray-free: SFT data, packing, the model, the loop, checkpoints.

``jobs/finetune.py`` is the thin Ray Train glue around these; a test can call each of
them directly.
"""
