"""The LLM server: one async vLLM engine (continuous batching) serving the base model and LoRA adapters.

Paths call :meth:`LLMServer.stream` with prompt token ids; requests that name an adapter
get it fetched from the registry to local disk (once per replica) and loaded by the
engine on first use.

The server refuses to start with LoRA enabled (``max_loras`` > 0, the default) on a checkpoint
the engine cannot apply LoRA to (an int8 W8A8 checkpoint on a CPU without AMX), before vLLM starts and
with the remedy: ``max_loras: 0`` for that engine, adapters on a full-precision engine.

It counts its generations by how they end (:class:`GenerationCounts`): ``finished``, ``failed``,
or ``cancelled`` when the caller stopped reading (a path timed out and fell back, a client went
away); a cancelled generation is aborted in vLLM, so no tokens are computed for a reader that is gone.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import AsyncIterator, Callable

from rayfleet.assets import resolve_model
from rayfleet.engines.async_vllm import AdapterRef, AsyncVllmEngine, TextDelta
from rayfleet.engines.base import EngineRequestError, SamplingConfig
from rayfleet.quantization.lora import require_lora_capable_engine
from rayfleet.registry import Registry
from serve_apps.config import LLMEngineConfig
from serve_apps.errors import RequestError
from serve_apps.paths import AdapterSource


@dataclass
class GenerationCounts:
    """This server's generations: running now, and ended by outcome."""

    running: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class LLMServer:
    """Streams generations for many concurrent callers from one engine.

    Args:
        on_generation_end: called with each generation's outcome (``finished``, ``failed``,
            ``cancelled``), e.g. to count it in a metric.
    """

    def __init__(self, config: LLMEngineConfig, on_generation_end: Callable[[str], None] | None = None):
        import torch

        # Every serving start comes here: refuse a LoRA-enabled engine on an int8 checkpoint on a CPU without AMX
        # before vLLM starts and fails inside its LoRA set-up with an AttributeError.
        require_lora_capable_engine(
            resolve_model(config.engine.model), config.max_loras, on_gpu=torch.cuda.is_available()
        )
        self.engine = AsyncVllmEngine(
            config.engine, max_loras=config.max_loras, max_lora_rank=config.max_lora_rank,
            max_cpu_loras=config.max_cpu_loras,
        )  # fmt: skip
        self._local_adapters: dict[str, str] = {}
        self.counts = GenerationCounts()
        self.on_generation_end = on_generation_end

    async def stream(
        self, prompt_ids: list[int], sampling: SamplingConfig, adapter: AdapterSource | None = None
    ) -> AsyncIterator[TextDelta]:
        """Generate for one prompt; a caller that stops reading cancels it (vLLM aborts the request)."""
        self.counts.running += 1
        outcome = "cancelled"  # unless it ends or fails below: CancelledError and GeneratorExit pass through
        try:
            lora = await self._adapter_ref(adapter) if adapter else None
            async for delta in self.engine.stream(prompt_ids, sampling, lora):
                yield delta
            outcome = "finished"
        except EngineRequestError as error:
            outcome = "failed"
            raise refused_request(error, sampling) from None
        except Exception:
            outcome = "failed"
            raise
        finally:
            self.counts.running -= 1
            setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
            if self.on_generation_end is not None:
                self.on_generation_end(outcome)

    async def _adapter_ref(self, adapter: AdapterSource) -> AdapterRef:
        folder = self._local_adapters.get(adapter.artifact.uri)
        if folder is None:
            folder = await asyncio.to_thread(Registry(adapter.registry, kind="adapters").fetch, adapter.artifact)
            self._local_adapters[adapter.artifact.uri] = folder
        return AdapterRef(adapter.name, adapter.lora_id, folder)

    def close(self) -> None:
        self.engine.close()


def refused_request(error: EngineRequestError, sampling: SamplingConfig) -> RequestError:
    """The client error for a request the engine refused: a 400 blaming ``response_format`` when the request
    constrained its reply (in serving, only a response format does), with the engine's reason."""
    if sampling.output_constraint() is not None:
        return RequestError(400, f"response_format: the engine cannot decode to it: {error}", "invalid_response_format",
                            "response_format")  # fmt: skip
    return RequestError(400, f"the engine refused the request: {error}", "invalid_request")
