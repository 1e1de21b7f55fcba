"""rayfleet: the life of an LLM on Ray — ingestion, LoRA fine-tuning, batch inference, serving.

Model files always come from local folders (see :mod:`rayfleet.assets`); hub downloads
are switched off for every process that imports rayfleet, so a missing model fails
fast with a clear message instead of hanging on the network.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
