"""Streaming generation with vLLM's async engine (``vllm.v1`` ``AsyncLLM``): continuous batching for serving.

Requests arrive one at a time from many coroutines; the engine batches every request in
flight at each step (continuous batching), so a new request joins the running batch at
once instead of waiting for it to finish. Many LoRA adapters share one base model: each
request may name an adapter folder, which the engine loads on its first use.

    engine = AsyncVllmEngine(EngineConfig(), max_loras=4)
    async for delta in engine.stream(prompt_ids, SamplingConfig(max_tokens=32), adapter=None):
        print(delta.text, end="")

On CPU machines it uses the environment measured for the batch engine
(:func:`rayfleet.engines.vllm_engine.configure_cpu_environment`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from transformers import AutoTokenizer

from rayfleet.assets import resolve_model
from rayfleet.engines.base import EngineConfig, EngineRequestError, SamplingConfig
from rayfleet.engines.templates import count_tokens
from rayfleet.engines.vllm_engine import (
    configure_cpu_environment,
    engine_arguments,
    sampling_params,
    send_vllm_logs_to_stderr,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter the engine can apply: a unique name, a stable integer id and its local folder."""

    name: str
    lora_id: int
    path: str


@dataclass(frozen=True)
class TextDelta:
    """New text since the previous delta of one request, with running token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None  # set on the last delta only


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
        """Generate for one prompt, yielding the new text as the engine produces it.

        Raises:
            EngineRequestError: vLLM refuses the request as the caller's mistake (its reason said).
        """
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        params = sampling_params(sampling, output_kind=RequestOutputKind.DELTA)
        lora = LoRARequest(adapter.name, adapter.lora_id, adapter.path) if adapter else None
        completion_tokens = 0
        request_id = uuid.uuid4().hex
        outputs = self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, request_id, lora_request=lora)
        try:
            async for output in outputs:
                completion = output.outputs[0]
                completion_tokens += len(completion.token_ids)
                yield TextDelta(
                    text=completion.text,
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=completion_tokens,
                    finish_reason=completion.finish_reason if output.finished else None,
                )
        except VLLMClientError as error:
            raise EngineRequestError(str(error)) from error

    def close(self) -> None:
        self.engine.shutdown()
