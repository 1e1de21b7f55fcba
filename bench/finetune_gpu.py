"""Benchmark on a GPU: our LoRA train step against plain transformers + peft, tokens/s and MFU.

    python -m bench.finetune_gpu [steps=10] [batch=8] [seq_len=2048] [variants=[hf_peft,ours_eager,ours]]
                                 [lora_dropout=0.05] [attention=auto] [profile=false]

Ray-free (the device that has the GPU need not have Ray). Both sides train the same
model on the same tokens:

- model: a Llama of TinyLlama-1.1B's shape (22 layers, hidden 2048, MLP 5632, 32 query
  and 4 key/value heads, vocabulary 32000), random weights, bf16, with LoRA adapters of
  ``LoraSettings``' defaults (r 16, alpha 32, dropout 0.05, every attention and MLP
  projection); AdamW on the adapters, bf16 autocast, gradients clipped to norm 1;
- data: ``batch`` random sequences of ``seq_len`` tokens per optimizer step, every next
  token labelled (``seq_len - 1`` per sequence on both sides, so both compute the same).

Variants:

- ``hf_peft``: what a user writes: ``model(input_ids=batch, labels=batch).loss.backward()``
  on a ``[batch, seq_len]`` tensor, transformers' sdpa attention, then the optimizer step;
- ``ours_eager``: ``rayfleet.training.loop.train`` on packed rows of ``batch`` sequences
  (one row per step, ``segment_sdpa``: flash attention example by example), compile off;
- ``ours``: the same with ``lora.compile`` at its default (every decoder layer compiled).

MFU is model FLOPs per token times tokens/s over the chip's dense bf16 peak
(``peak_tflops``, 989.4 for an H100/H200 SXM by the datasheet). Two FLOP counts:

- ``mfu`` counts what LoRA training must compute: per frozen weight 2 FLOPs forward and
  2 for the gradient of its input (frozen weights need no weight gradient), 6 per
  adapter weight, and causal attention (forward 2·seq·d per layer and token, backward
  twice that);
- ``mfu_6n`` uses the common 6·N per token for every weight, as if the frozen ones got
  weight gradients too (the convention most published MFU figures use), plus the same
  attention.

The first ``warmup`` steps of each variant are not timed; their time, with model building
and compilation, is ``warmup_s``. ``measured_matmul_tflops`` is an 8192³ bf16 matrix
product on this chip, for scale. Each variant's figures go to stderr as it ends; the
last line on stdout is the one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from contextlib import nullcontext
from typing import Literal

import torch
from pydantic import Field

from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.training.data import IGNORE_INDEX
from rayfleet.training.model import causal_lm_of

TINYLLAMA_SHAPE = dict(
    vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
    num_attention_heads=32, num_key_value_heads=4, rms_norm_eps=1e-5, tie_word_embeddings=False,
)  # fmt: skip
H100_H200_DENSE_BF16_TFLOPS = 989.4


class FinetuneGpuBenchConfig(BaseConfig):
    """What the benchmark runs."""

    steps: int = Field(10, ge=1, description="Timed optimizer steps per variant.")
    warmup: int = Field(3, ge=1, description="Untimed steps first (compilation happens in them).")
    batch: int = Field(8, ge=1, description="Sequences per optimizer step (one packed row of ours).")
    seq_len: int = Field(2048, ge=16, description="Tokens per sequence.")
    variants: list[Literal["hf_peft", "ours_eager", "ours"]] = Field(
        default_factory=lambda: ["hf_peft", "ours_eager", "ours"], description="What to run, in order."
    )
    shape: dict = Field(default_factory=lambda: dict(TINYLLAMA_SHAPE), description="LlamaConfig fields of the model.")
    peak_tflops: float = Field(H100_H200_DENSE_BF16_TFLOPS, gt=0, description="The chip's dense bf16 peak, TFLOP/s.")
    lora_dropout: float = Field(
        0.05, ge=0, lt=1, description="LoRA dropout of both sides (LoraSettings' default; peft's own is 0)."
    )
    attention: Literal["auto", "flash", "cudnn", "efficient"] = Field(
        "auto",
        description="sdpa backend for every variant: auto is torch's own choice (cuDNN on Hopper in torch 2.11).",
    )
    profile: bool = Field(
        False, description="One more step per variant under torch.profiler; its top kernels to stderr."
    )


def flops_per_token(model, seq_len: int) -> dict[str, float]:
    """Training FLOPs per token of a LoRA model: what LoRA needs, and the 6·N convention.

    Frozen weights are the matrices a token multiplies (every linear layer and the LM head;
    embeddings are a lookup). Attention is causal: each token attends to (seq_len + 1) / 2
    positions on average.
    """
    config = model.config
    frozen = sum(module.weight.numel() for module in causal_lm_of(model).modules()
                 if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad)  # fmt: skip
    adapters = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention_forward = 2 * 2 * (seq_len + 1) / 2 * head_dim * config.num_attention_heads * config.num_hidden_layers
    return {
        "lora": 4 * frozen + 6 * adapters + 3 * attention_forward,
        "six_n": 6 * (frozen + adapters) + 3 * attention_forward,
        "frozen_matmul_params": frozen,
        "adapter_params": adapters,
    }


def random_llama(shape: dict, device: torch.device):
    """A Llama of ``shape`` with random weights, built on ``device`` (bf16 on CUDA, fp32 on CPU)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with device:
        return AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=dtype, attn_implementation="sdpa")


def random_sequences(config: FinetuneGpuBenchConfig, vocab_size: int) -> torch.Tensor:
    """[steps, batch, seq_len] tokens: warm-up, timed and (with ``profile``) profiled steps."""
    generator = torch.Generator().manual_seed(0)
    steps = config.warmup + config.steps + int(config.profile)
    return torch.randint(0, vocab_size, (steps, config.batch, config.seq_len), generator=generator)


class StepClock:
    """Called after every optimizer step: waits for the GPU, notes the time, profiles the step after the timed ones."""

    def __init__(self, config: FinetuneGpuBenchConfig, device: torch.device, name: str):
        self.config, self.device, self.name = config, device, name
        self.ends: list[float] = []
        self.profiler = None

    def __call__(self) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)
            for by_shape in (False, True):
                averages = self.profiler.key_averages(group_by_input_shape=by_shape)
                table = averages.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=70)
                print(f"bench.finetune_gpu {self.name} profile of one step (by input shape: {by_shape}):\n{table}",
                      file=sys.stderr, flush=True)  # fmt: skip
            self.profiler = None
        elif self.config.profile and len(self.ends) == self.config.warmup + self.config.steps:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities, record_shapes=True)
            self.profiler.__enter__()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_hf_peft(config: FinetuneGpuBenchConfig, data: torch.Tensor, device: torch.device) -> dict:
    """Plain transformers + peft: labels=input_ids on a [batch, seq_len] tensor; step times."""
    from peft import get_peft_model

    from rayfleet.training.loop import autocast
    from rayfleet.training.model import LoraSettings, peft_lora_config

    model = get_peft_model(
        random_llama(config.shape, device), peft_lora_config(LoraSettings(dropout=config.lora_dropout))
    )
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=2e-4)
    model.train()
    clock = StepClock(config, device, "hf_peft")
    for batch in data:
        batch = batch.to(device)
        with autocast(device):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock()
    return {"model": model, "step_ends": clock.ends, "last_loss": loss.item()}


def packed_rows(data: torch.Tensor) -> list[dict]:
    """One packed row per step: the step's sequences end to end, positions restarting at each."""
    rows = []
    for batch in data:
        labels = batch.clone()
        labels[:, 0] = IGNORE_INDEX  # a sequence's first token is context, as in HF's shifted labels
        rows.append({"input_ids": batch.flatten().tolist(), "labels": labels.flatten().tolist(),
                     "position_ids": list(range(batch.shape[1])) * batch.shape[0]})  # fmt: skip
    return rows


def run_ours(config: FinetuneGpuBenchConfig, data: torch.Tensor, device: torch.device, compile: str | bool) -> dict:
    """``rayfleet.training.loop.train`` on one packed row per step; step times."""
    from rayfleet.training.checkpoint import TrainState
    from rayfleet.training.loop import TrainSettings, make_optimizer, make_scheduler, train
    from rayfleet.training.model import LoraSettings, add_lora

    model = add_lora(
        random_llama(config.shape, device), LoraSettings(dropout=config.lora_dropout, compile=compile), device
    )
    settings = TrainSettings(
        max_steps=len(data), warmup_steps=0, schedule="constant", eval_every=10**6, checkpoint_every=10**6
    )
    optimizer = make_optimizer(model, settings)
    rows = packed_rows(data)
    clock, losses = StepClock(config, device, "ours" if compile == "auto" else "ours_eager"), []

    def on_step(report, state) -> None:
        clock()
        losses.append(report.loss)

    train(model, optimizer, make_scheduler(optimizer, settings), lambda epoch, skip: rows[skip:], [], settings,
          TrainState(), on_step)  # fmt: skip
    return {"model": model, "step_ends": clock.ends, "last_loss": losses[-1]}


def figures(config: FinetuneGpuBenchConfig, result: dict, started: float, device: torch.device) -> dict:
    """tokens/s over the timed steps, MFU both ways, warm-up (compile) time, peak memory."""
    ends = result["step_ends"]
    timed_seconds = ends[config.warmup + config.steps - 1] - ends[config.warmup - 1]
    tokens_per_s = config.steps * config.batch * config.seq_len / timed_seconds
    flops = flops_per_token(result["model"], config.seq_len)
    step_seconds = timed_seconds / config.steps
    return {
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(flops["lora"] * tokens_per_s / (config.peak_tflops * 1e12), 4),
        "mfu_6n": round(flops["six_n"] * tokens_per_s / (config.peak_tflops * 1e12), 4),
        "step_ms": round(step_seconds * 1e3, 1),
        "warmup_s": round(ends[config.warmup - 1] - started, 1),
        "last_loss": round(result["last_loss"], 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if device.type == "cuda" else None,
        "frozen_matmul_params": flops["frozen_matmul_params"],
        "adapter_params": flops["adapter_params"],
    }


def attention_backend(name: str):
    """Pin sdpa to one backend (nothing for auto)."""
    if name == "auto":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    return sdpa_kernel(backends[name])


def run_variant(name: str, config: FinetuneGpuBenchConfig, data: torch.Tensor, device: torch.device) -> dict:
    """One variant from a fresh model to its figures; the model is freed before the next."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with attention_backend(config.attention):
        if name == "hf_peft":
            result = run_hf_peft(config, data, device)
        else:
            result = run_ours(config, data, device, "auto" if name == "ours" else False)
    outcome = figures(config, result, started, device)
    del result
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"bench.finetune_gpu {name}: {json.dumps(outcome)}", file=sys.stderr, flush=True)
    return outcome


def matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 10) -> float | None:
    """bf16 matrix-product rate on this chip (random data), for scale; None off CUDA."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return round(2 * size**3 * repeats / (time.perf_counter() - started) / 1e12, 1)


def versions() -> dict:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def main(config: FinetuneGpuBenchConfig, device: torch.device | None = None) -> dict:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = random_sequences(config, config.shape["vocab_size"])
    line: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", **versions(),
                  "batch": config.batch, "seq_len": config.seq_len, "timed_steps": config.steps,
                  "attention": config.attention, "lora_dropout": config.lora_dropout,
                  "measured_matmul_tflops": matmul_tflops(device), "peak_tflops": config.peak_tflops}  # fmt: skip
    for name in config.variants:
        try:
            line[name] = run_variant(name, config, data, device)
        except Exception as error:  # noqa: BLE001 - one failed variant must not lose the others' figures
            line[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"bench.finetune_gpu {name} failed", file=sys.stderr, flush=True)
            traceback.print_exc()
    for name in ("ours", "ours_eager"):
        if "tokens_per_s" in line.get(name, {}) and "tokens_per_s" in line.get("hf_peft", {}):
            line[f"{name}_vs_hf_peft"] = round(line[name]["tokens_per_s"] / line["hf_peft"]["tokens_per_s"], 2)
    print(json.dumps(line), flush=True)
    return line


if __name__ == "__main__":
    main(config_or_exit(FinetuneGpuBenchConfig, sys.argv[1:]))
