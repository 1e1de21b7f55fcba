"""Benchmark: our LoRA training loop against HF ``Trainer`` + peft, and 1 against 2 Ray Train workers.

    python -m bench.finetune [steps=10] [papers=100] [max_seq_len=256]

Same model (SmolLM2-135M-Instruct, fp32, LoRA r16 on every attention and MLP
projection, dropout 0.05), same data (the aclsum demo Q&A set of ``jobs.finetune``),
same chat-template tokenization and assistant-only labels, same sequence limit:

- ``ours``: ``rayfleet.training.loop.train`` in this process on packed rows of
  ``pack_length`` tokens, ``accumulation`` rows per step: no padding, the tokens all
  examples of a row begin with (SmolLM2's chat template: system prompt and role header)
  held once per row, attention example by example within a row (``segment_sdpa``), LoRA
  dropout drawn per dropped element (``GapSampledDropout``), logits only at labelled
  positions. ``ours_unshared`` is the same loop with every example whole in its row
  (``share_prefix`` off): what packing alone gives.
- ``hf_trainer``: what a user writes: ``transformers.Trainer`` on the peft model with
  its defaults (``per_device_train_batch_size=8``) and ``DataCollatorForSeq2Seq``, the
  stock collator that pads ``input_ids`` and ``labels`` to the longest example of the batch.
- ``workers_1`` / ``workers_2``: ``jobs.finetune.main`` on a local Ray with one worker
  holding both cores, then two workers holding one core each (tokens/s as the job
  reports it: training steps only, summed over workers).

Tokens are the examples' real (non-padding) input tokens in every figure: a prefix a row
holds once counts once per example, as the examples hold it (``ours_computed_tokens_per_step``
says how many the model ran on). The first step of each
in-process run is a warm-up and is not timed. Prints one JSON line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time

import torch
from pydantic import Field

from rayfleet.assets import resolve_model
from rayfleet.config import BaseConfig, config_or_exit


class FinetuneBenchConfig(BaseConfig):
    """What the benchmark runs."""

    model: str = Field("smollm2-135m-instruct", description="Base model: provisioned name or local folder.")
    papers: int = Field(100, ge=4, le=100, description="aclsum train papers in the data (3 Q&A pairs each).")
    steps: int = Field(10, ge=2, description="Optimizer steps per in-process run; the first is not timed.")
    max_seq_len: int = Field(256, ge=64, description="Longest example in tokens (both loops).")
    pack_length: int = Field(1024, ge=64, description="Our loop: tokens per packed row (one micro-batch).")
    accumulation: int = Field(1, ge=1, description="Our loop: packed rows per optimizer step.")
    hf_batch_size: int = Field(8, ge=1, description="HF Trainer: examples per step (its default is 8).")
    ray_steps: int = Field(6, ge=1, description="Optimizer steps of each Ray Train run (1 and 2 workers).")
    threads: int = Field(2, ge=1, description="torch threads of the in-process runs.")
    share_prefix: bool = Field(True, description="Our loop and the Ray runs: a row's shared prefix held once.")


def demo_examples(config: FinetuneBenchConfig, tokenizer):
    from jobs.finetune import demo_rows
    from rayfleet.training.data import prepare_examples

    examples, _ = prepare_examples(demo_rows("train", config.papers), tokenizer, config.max_seq_len, "fail")
    return examples


def run_ours(config: FinetuneBenchConfig, model_path: str, rows: list[dict]) -> dict:
    """Our loop in this process; tokens/s over steps 2..N."""
    from rayfleet.training.checkpoint import TrainState
    from rayfleet.training.loop import TrainSettings, make_optimizer, make_scheduler, train
    from rayfleet.training.model import LoraSettings, build_lora_model

    torch.manual_seed(0)
    model = build_lora_model(model_path, LoraSettings(), torch.device("cpu"))
    settings = TrainSettings(max_steps=config.steps, gradient_accumulation_steps=config.accumulation,
                             eval_every=10**6, checkpoint_every=10**6)  # fmt: skip
    optimizer = make_optimizer(model, settings)
    steps = []
    train(model, optimizer, make_scheduler(optimizer, settings), lambda epoch, skip: rows[skip:], [], settings,
          TrainState(), lambda report, state: steps.append(report))  # fmt: skip
    timed = steps[1:]
    tokens, seconds = sum(step.tokens for step in timed), sum(step.seconds for step in timed)
    return {
        "tokens_per_s": tokens / seconds,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_step": tokens / len(timed),
        "computed_tokens_per_step": sum(step.computed_tokens for step in timed) / len(timed),
    }


def run_hf_trainer(config: FinetuneBenchConfig, model_path: str, examples, tokenizer) -> dict:
    """HF Trainer + peft with DataCollatorForSeq2Seq (pads to the batch's longest); tokens/s over steps 2..N."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from rayfleet.training.model import LoraSettings, peft_lora_config

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(base, peft_lora_config(LoraSettings()))
    dataset = [{"input_ids": example.input_ids, "labels": example.labels} for example in examples]
    stock_collator = DataCollatorForSeq2Seq(tokenizer, padding=True)
    batch_tokens: list[int] = []

    def counting_collator(features):
        batch = stock_collator(features)
        batch_tokens.append(int(batch["attention_mask"].sum()))
        return batch

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(output_dir=output, max_steps=config.steps,
                                      per_device_train_batch_size=config.hf_batch_size,
                                      learning_rate=2e-4, warmup_steps=3, report_to=[], save_strategy="no",
                                      logging_strategy="no", use_cpu=True, dataloader_num_workers=0,
                                      seed=0)  # fmt: skip
        Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=counting_collator,
                callbacks=[StepClock()]).train()  # fmt: skip
    tokens, seconds = sum(batch_tokens[1 : config.steps]), step_ends[-1] - step_ends[0]
    padded = config.hf_batch_size * (config.steps - 1)
    return {
        "tokens_per_s": tokens / seconds,
        "tokens": tokens,
        "seconds": seconds,
        "examples_per_step": padded / (config.steps - 1),
    }


def run_ray(config: FinetuneBenchConfig, workers: int, folder: str) -> dict:
    """The job on the local Ray with ``workers`` workers sharing the machine's cores."""
    from jobs.finetune import FinetuneConfig, main

    cores = len(os.sched_getaffinity(0))
    job = FinetuneConfig.model_validate({
        "model": config.model, "data": {"demo_train_papers": config.papers, "max_seq_len": config.max_seq_len,
                                        "pack_length": config.pack_length, "demo_validation_papers": 2,
                                        "demo_grounded_papers": 0, "share_prefix": config.share_prefix},
        "train": {"max_steps": config.ray_steps, "gradient_accumulation_steps": config.accumulation,
                  "eval_every": 10**6, "checkpoint_every": 10**6},
        "scaling": {"num_workers": workers, "cpus_per_worker": cores // workers},
        "storage_path": os.path.join(folder, "runs"), "registry": os.path.join(folder, "registry"),
        "run_name": f"bench-{workers}-workers",
    })  # fmt: skip
    report = main(job)
    return {"tokens_per_s": report["tokens_per_s"], "seconds": report["seconds"]}


def report_stage(name: str, figures: dict) -> dict:
    """Log one stage's figures as soon as it ends (stderr), so a cut-short run still tells something."""
    print(f"bench.finetune {name}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def main(config: FinetuneBenchConfig) -> dict:
    import ray
    from transformers import AutoTokenizer

    from rayfleet.training.data import pack_examples, shared_token_share

    torch.set_num_threads(config.threads)
    model_path = str(resolve_model(config.model))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    examples = demo_examples(config, tokenizer)
    rows = pack_examples(examples, config.pack_length, share_prefix=config.share_prefix)
    ours = report_stage("ours", run_ours(config, model_path, rows))
    unshared = report_stage("ours_unshared", run_ours(config, model_path,
                                                      pack_examples(examples, config.pack_length,
                                                                    share_prefix=False)))  # fmt: skip
    hf = report_stage("hf_trainer", run_hf_trainer(config, model_path, examples, tokenizer))
    ray.init(
        address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, logging_level=logging.WARNING
    )
    with tempfile.TemporaryDirectory() as folder:
        one = report_stage("workers_1", run_ray(config, 1, folder))
        two = report_stage("workers_2", run_ray(config, 2, folder))
    ray.shutdown()
    figures = {
        "tokens_per_s": round(ours["tokens_per_s"], 1),
        "hf_trainer_tokens_per_s": round(hf["tokens_per_s"], 1),
        "speedup_vs_hf_trainer": round(ours["tokens_per_s"] / hf["tokens_per_s"], 2),
        "ours_unshared_tokens_per_s": round(unshared["tokens_per_s"], 1),
        "unshared_speedup_vs_hf_trainer": round(unshared["tokens_per_s"] / hf["tokens_per_s"], 2),
        "shared_token_share": round(shared_token_share(rows), 3),
        "workers_1_tokens_per_s": round(one["tokens_per_s"], 1),
        "workers_2_tokens_per_s": round(two["tokens_per_s"], 1),
        "workers_2_vs_1": round(two["tokens_per_s"] / one["tokens_per_s"], 2),
        "ours_tokens_per_step": round(ours["tokens_per_step"]),
        "ours_computed_tokens_per_step": round(ours["computed_tokens_per_step"]),
        "hf_examples_per_step": hf["examples_per_step"],
        "examples": len(examples),
        "mean_example_tokens": round(sum(len(e) for e in examples) / len(examples), 1),
        "timed_steps": config.steps - 1,
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(config_or_exit(FinetuneBenchConfig, sys.argv[1:]))
