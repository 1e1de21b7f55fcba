"""The generation-engine contract shared by every engine (vLLM, transformers).

Engines take chat conversations, render them with the model's own chat template into
token ids (the same ids for every engine, so their outputs are comparable) and return
one :class:`Generation` per conversation, in order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from pydantic import Field, model_validator
from transformers import PreTrainedTokenizerBase

from rayfleet.config import BaseConfig

ChatMessage = dict[str, str]
Conversation = list[ChatMessage]
# The SamplingConfig fields that constrain a reply's form (vLLM structured outputs): at most one is set.
OUTPUT_CONSTRAINTS = ("regex", "json_object", "json_schema")


class EngineRequestError(ValueError):
    """A request the engine refuses as the caller's mistake, not its own failure (vLLM's client errors:
    a JSON schema its grammar compilers cannot take)."""


class SamplingConfig(BaseConfig):
    """Sampling parameters, identical in meaning for every engine."""

    max_tokens: int = Field(256, ge=1, description="Most new tokens to generate per request.")
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    repetition_penalty: float = Field(1.1, gt=0.0, description="1.0 disables it; small models loop without it.")
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Subtracted from the logit of every token already generated (OpenAI's meaning).",
    )
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Subtracted from a generated token's logit once per time it was generated."
    )
    stop: list[str] = Field(
        default_factory=list,
        description="Strings that end the reply; the reply is cut before the first one (finish reason stop).",
    )
    seed: int | None = Field(
        0,
        description="Random seed for sampled (temperature > 0) decoding; null samples afresh each call "
        "(serving's default).",
    )
    regex: str | None = Field(
        None,
        description="Constrain every reply to this regular expression "
        "(vLLM structured outputs; the transformers engine refuses it).",
    )
    json_object: bool = Field(
        False,
        description="Constrain every reply to a JSON object (vLLM structured outputs; the transformers engine "
        "refuses it). A reply cut by max_tokens is no whole object.",
    )
    json_schema: dict[str, Any] | None = Field(
        None,
        description="Constrain every reply to JSON valid against this JSON Schema (vLLM structured outputs; the "
        "transformers engine refuses it). A reply cut by max_tokens is no whole value.",
    )

    @model_validator(mode="after")
    def _one_constraint(self) -> "SamplingConfig":
        named = [name for name, _ in self._constraints()]
        if len(named) > 1:
            raise ValueError(f"set at most one of {', '.join(OUTPUT_CONSTRAINTS)} (got {' and '.join(named)})")
        return self

    def output_constraint(self) -> tuple[str, Any] | None:
        """The constraint on every reply, as its field's name and value (``("regex", "[0-9]+")``), if any."""
        return next(iter(self._constraints()), None)

    def _constraints(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in OUTPUT_CONSTRAINTS if getattr(self, name) not in (None, False)]


class EngineConfig(BaseConfig):
    """Which engine runs which model, and how."""

    kind: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto picks vLLM when it imports, else transformers (with a warning)."
    )
    model: str = Field(
        "smollm2-135m-instruct",
        description="A provisioned model name (see rayfleet.assets) or a path to an HF model folder.",
    )
    adapter: str | None = Field(None, description="Path or URI of a peft LoRA adapter to apply, if any.")
    merge_adapter: bool = Field(
        False,
        description="Run the adapter merged into the weights (cached per base and adapter): no per-token LoRA cost.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype; fp32 on CPU (bf16 is slower there and hurts small models)."
    )
    max_model_len: int = Field(2048, ge=128, description="Context length: prompt plus generated tokens.")
    max_num_seqs: int = Field(32, ge=1, description="Most sequences batched together by the engine.")
    enforce_eager: bool = Field(True, description="vLLM: skip graph compilation (fast start).")
    cpu_kv_cache_gib: int = Field(
        2, ge=1, description="vLLM on CPU: KV cache size in whole GiB (vLLM reads an integer)."
    )
    cpu_threads_bind: str = Field(
        "auto", description="vLLM on CPU: cores to bind, e.g. '0-1'; auto binds every core the process may use."
    )
    in_process: bool = Field(
        True, description="vLLM on CPU: run the engine core in this process (fast start; see vllm_engine)."
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM on GPU: share of memory to use.")
    transformers_batch_size: int = Field(8, ge=1, description="transformers engine: prompts per generate call.")


@dataclass(frozen=True)
class Generation:
    """One engine output: the text and its token accounting."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    token_ids: list[int] = field(default_factory=list, repr=False)


def claim_cpu_threads(threads: int | None = None) -> int:
    """Let a CPU engine use ``threads`` cores (default: every core this process may run on).

    Ray sets ``OMP_NUM_THREADS`` to an actor's ``num_cpus`` (often 1), which halves an
    engine's speed on a node it is meant to own (measured: vLLM prefill at 170 against
    338 prompt tokens/s on 2 cores). Returns the thread count set.
    """
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return threads


@runtime_checkable
class GenerationEngine(Protocol):
    """What every engine offers; see :func:`rayfleet.engines.create_engine`."""

    name: str
    model_name: str
    tokenizer: PreTrainedTokenizerBase

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes in this model's tokenizer as a message's text (a special token's
        spelling, ``<|im_end|>``, counted as the text it stays: rayfleet.engines.templates)."""

    def prompt_token_ids(self, conversation: Conversation) -> list[int]:
        """The token ids a conversation renders to with the chat template."""

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        """Generate one reply per conversation, in order."""

    def close(self) -> None:
        """Release the engine's memory and worker processes."""
