"""Size on disk, peak memory and generation speed of a model, each engine run in its own process.

:func:`measure_generation` starts the engine in a fresh (spawned) process, so the peak
resident memory it reports is that model's alone: imports, weights, engine buffers and
the KV cache it touched, never another model's leftovers.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rayfleet.engines import Conversation, EngineConfig, Generation, SamplingConfig, create_engine

WEIGHT_SUFFIXES = (".safetensors", ".bin")


class EngineRunError(RuntimeError):
    """The measured engine failed in its process; the message carries the original error."""


@dataclass(frozen=True)
class GenerationRun:
    """One engine's outputs and what they cost."""

    generations: list[Generation]
    load_seconds: float
    generate_seconds: float
    peak_memory_bytes: int

    @property
    def completion_tokens(self) -> int:
        return sum(generation.completion_tokens for generation in self.generations)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.generate_seconds if self.generate_seconds else 0.0


def weights_size_bytes(folder: Path) -> int:
    """Bytes of the weight files in a model folder (what a deployment downloads and maps)."""
    return sum(path.stat().st_size for path in folder.iterdir() if path.name.endswith(WEIGHT_SUFFIXES))


def measure_generation(
    config: EngineConfig, conversations: Sequence[Conversation], sampling: SamplingConfig
) -> GenerationRun:
    """Load ``config``'s engine in a fresh process, warm it up, and time one batch of ``conversations``."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(generate_and_measure, config, list(conversations), sampling).result()


def generate_and_measure(
    config: EngineConfig, conversations: list[Conversation], sampling: SamplingConfig
) -> GenerationRun:
    """Runs inside the measuring process: load, one short warm-up request, then the timed batch."""
    try:
        return timed_generation(config, conversations, sampling)
    except Exception as error:  # not every engine error pickles back to the parent (pydantic's do not)
        raise EngineRunError(f"{config.kind} engine on {config.model}: {type(error).__name__}: {error}") from None


def timed_generation(
    config: EngineConfig, conversations: list[Conversation], sampling: SamplingConfig
) -> GenerationRun:
    """Load, warm up, time one batch; peak resident memory of this process at the end."""
    started = time.perf_counter()
    engine = create_engine(config)
    engine.generate(conversations[:1], sampling.model_copy(update={"max_tokens": 4}))
    loaded = time.perf_counter()
    generations = engine.generate(conversations, sampling)
    finished = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    engine.close()
    return GenerationRun(generations, loaded - started, finished - loaded, peak)
