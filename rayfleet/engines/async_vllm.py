"""Streaming generation with vLLM's async engine (``vllm.v1`` ``AsyncLLM``): continuous batching for serving.

Requests arrive one at a time from many coroutines; the engine batches every request in
flight at each step (continuous batching), so a new request joins the running batch at
once instead of waiting for it to finish. Many LoRA adapters share one base model: each
request may name an adapter folder, which the engine loads on its first use.

    engine = AsyncVllmEngine(EngineConfig(), max_loras=4)
    async for delta in engine.stream(prompt_ids, SamplingConfig(max_tokens=32), adapter=None):
        print(delta.text, end="")

A request may ask for each generated token's log probability (``StreamSampling.logprobs``), with
the likeliest tokens at each place; the deltas carry them, token by token. They are vLLM's
``raw_logprobs``: the model's own, before temperature, penalties and ``logit_bias``, but after an
output constraint's mask (a token it forbids has -inf, reported as :data:`FORBIDDEN_LOGPROB`).

On CPU machines it uses the environment measured for the batch engine
(:func:`rayfleet.engines.vllm_engine.configure_cpu_environment`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from pydantic import Field
from transformers import AutoTokenizer

from rayfleet.assets import resolve_model
from rayfleet.engines.base import EngineConfig, EngineRequestError, SamplingConfig
from rayfleet.engines.exclusive import ExclusiveGate
from rayfleet.engines.templates import count_tokens
from rayfleet.engines.vllm_engine import (
    configure_cpu_environment,
    engine_arguments,
    sampling_params,
    send_vllm_logs_to_stderr,
)

logger = logging.getLogger(__name__)

VLLM_MAX_LOGPROBS = 20  # vLLM's default max_logprobs: the most likeliest tokens a request may ask for
FORBIDDEN_LOGPROB = -9999.0  # a token an output constraint forbids (-inf is no JSON number), as vLLM's server says it


class StreamSampling(SamplingConfig):
    """Sampling for one served request: the batch settings, plus what only a served request asks for."""

    n: int = Field(1, ge=1, description="Answers to generate for the prompt (each from its own seed, seed + index).")

    logprobs: int | None = Field(
        None,
        ge=0,
        le=VLLM_MAX_LOGPROBS,
        description="Return each generated token's log probability and this many likeliest tokens at its "
        "place (0: the token's own only); None returns none.",
    )
    prompt_logprobs: int | None = Field(
        None,
        ge=0,
        le=VLLM_MAX_LOGPROBS,
        description="Return each prompt token's log probability (the first has none) and this many likeliest "
        "tokens at its place, on each answer's first delta; None returns none.",
    )
    logit_bias: dict[int, float] | None = Field(
        None, description="Added to these token ids' logits before sampling (-100 bans a token, 100 forces it)."
    )


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter the engine can apply: a unique name, a stable integer id and its local folder."""

    name: str
    lora_id: int
    path: str


@dataclass(frozen=True)
class TokenLogprob:
    """A token (its text) and its log probability, with the likeliest tokens at its place (text and log
    probability, likeliest first) when they were asked for. A prompt's first token has none (None)."""

    token: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """New text since the previous delta of one request, with running token counts (and, when asked
    for, the log probabilities of the delta's tokens)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None  # set on the answer's last delta only
    logprobs: tuple[TokenLogprob, ...] = ()
    index: int = 0  # which of the request's n answers
    prompt_logprobs: tuple[TokenLogprob, ...] = ()  # on each answer's first delta, when asked for


def token_logprobs(token_ids, positions, top: int, text_of=None) -> tuple[TokenLogprob, ...]:
    """vLLM's log probabilities (one ``{token id: Logprob}`` per token, generated or of the prompt) as
    :class:`TokenLogprob` objects, each with the ``top`` likeliest tokens at its place; a place without any
    (a prompt's first) is the token's text, ``text_of(token_id)``, and None."""
    if positions is None:
        return ()
    result = []
    for token_id, candidates in zip(token_ids, positions):
        if candidates is None:
            result.append(TokenLogprob(text_of(token_id), None))
            continue
        chosen = candidates[token_id]
        ranked = sorted((c for c in candidates.values() if c.rank is not None and c.rank <= top), key=lambda c: c.rank)
        result.append(TokenLogprob(chosen.decoded_token or "", reportable(chosen.logprob),
                                   tuple((c.decoded_token or "", reportable(c.logprob)) for c in ranked)))  # fmt: skip
    return tuple(result)


def reportable(logprob: float) -> float:
    """A log probability as a finite number: a forbidden token's -inf becomes :data:`FORBIDDEN_LOGPROB`."""
    return max(logprob, FORBIDDEN_LOGPROB)


class AsyncVllmEngine:
    """One vLLM ``AsyncLLM`` serving the base model and any number of LoRA adapters on it.

    Args:
        config: the engine settings shared with the batch engines.
        max_loras: adapters active in one batch (``enable_lora`` when above 0).
        max_lora_rank: the largest adapter rank accepted.
        max_cpu_loras: adapters kept loaded in memory (least recently used evicted).
    """

    name = "vllm-async"

    def __init__(self, config: EngineConfig, max_loras: int = 0, max_lora_rank: int = 16, max_cpu_loras: int = 8):
        import torch

        if not torch.cuda.is_available():
            configure_cpu_environment(config)
        send_vllm_logs_to_stderr()
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        model_path = str(resolve_model(config.model))
        self.config = config
        self.lora = bool(max_loras)
        self.gate = ExclusiveGate()  # a prompt's log probabilities on a LoRA engine are computed alone (.exclusive)
        self.model_name = config.model
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        lora_options = (
            dict(enable_lora=True, max_loras=max_loras, max_lora_rank=max_lora_rank, max_cpu_loras=max_cpu_loras)
            if max_loras
            else {}
        )
        arguments = AsyncEngineArgs(
            **engine_arguments(model_path, config, torch.cuda.is_available()), disable_log_stats=True, **lora_options
        )
        logger.info("starting vLLM AsyncLLM with %s", arguments)
        self.engine = AsyncLLM.from_engine_args(arguments)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    async def stream(
        self, prompt_ids: list[int], sampling: SamplingConfig, adapter: AdapterRef | None = None
    ) -> AsyncIterator[TextDelta]:
        """Generate for one prompt, yielding the new text as the engine produces it (of each of its ``n``
        answers, told apart by the deltas' ``index``, when ``sampling`` is a :class:`StreamSampling`).

        Raises:
            EngineRequestError: vLLM refuses the request as the caller's mistake (its reason said).
        """
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        served = isinstance(sampling, StreamSampling)  # a plain SamplingConfig asks for one answer, nothing more
        extras = dict(n=sampling.n, logprobs=sampling.logprobs, prompt_logprobs=sampling.prompt_logprobs,
                      logit_bias=sampling.logit_bias) if served else {}  # fmt: skip
        params = sampling_params(sampling, output_kind=RequestOutputKind.DELTA, **extras)
        top, prompt_top = extras.get("logprobs") or 0, extras.get("prompt_logprobs") or 0
        lora = LoRARequest(adapter.name, adapter.lora_id, adapter.path) if adapter else None
        alone = self.lora and extras.get("prompt_logprobs") is not None
        async with self.gate.hold(exclusive=alone):
            prompt = TokensPrompt(prompt_token_ids=prompt_ids)
            outputs = self.engine.generate(prompt, params, uuid.uuid4().hex, lora_request=lora)
            async for delta in self._deltas(outputs, prompt_ids, top, prompt_top):
                yield delta

    async def _deltas(self, outputs, prompt_ids: list[int], top: int, prompt_top: int) -> AsyncIterator[TextDelta]:
        """vLLM's outputs of one request as deltas per answer."""
        from vllm.exceptions import VLLMClientError

        completion_tokens: dict[int, int] = {}  # by answer (vLLM sends nothing more of an answer once it ends)
        prompt_logprobs: tuple[TokenLogprob, ...] = ()
        try:
            async for output in outputs:
                if output.prompt_logprobs:  # the first output's only
                    prompt_logprobs = token_logprobs(prompt_ids, output.prompt_logprobs, prompt_top, self._text_of)
                for completion in output.outputs:
                    first = completion.index not in completion_tokens
                    tokens = completion_tokens.get(completion.index, 0) + len(completion.token_ids)
                    completion_tokens[completion.index] = tokens
                    yield TextDelta(
                        text=completion.text,
                        prompt_tokens=len(prompt_ids),
                        completion_tokens=tokens,
                        finish_reason=completion.finish_reason,
                        logprobs=token_logprobs(completion.token_ids, completion.logprobs, top),
                        index=completion.index,
                        prompt_logprobs=prompt_logprobs if first else (),
                    )
        except VLLMClientError as error:
            raise EngineRequestError(str(error)) from error

    def _text_of(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def close(self) -> None:
        self.engine.shutdown()
