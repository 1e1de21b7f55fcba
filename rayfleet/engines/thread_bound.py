"""An engine created and always driven from one dedicated thread.

OpenMP keeps its thread count per OS thread. A CPU engine sets it (and vLLM binds its
threads) in the thread that creates it; a call from another thread sees the process
default instead, which Ray sets to the actor's ``num_cpus`` (``OMP_NUM_THREADS=1``).
vLLM's CPU attention then fails on that call ("Check failed:
input->metadata->thread_num == thread_num (1 vs. 2)"). Ray Data runs an actor's
``__init__`` and its ``__call__`` on different threads, so every engine held by a Ray
Data actor goes through :class:`ThreadBoundEngine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rayfleet.engines.base import Conversation, EngineConfig, Generation, GenerationEngine, SamplingConfig


class ThreadBoundEngine:
    """:func:`rayfleet.engines.create_engine` on its own thread; ``generate`` always runs there.

    Everything else (``tokenizer``, ``count_tokens``, ``prompt_token_ids``, ``name``) is the
    engine's own and may be used from any thread.
    """

    def __init__(self, config: EngineConfig):
        from rayfleet.engines import create_engine

        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.engine: GenerationEngine = self._thread.submit(create_engine, config).result()

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        return self._thread.submit(self.engine.generate, conversations, sampling).result()

    def close(self) -> None:
        """Close the engine (on its thread) and end the thread."""
        self._thread.submit(getattr(self.engine, "close", lambda: None)).result()
        self._thread.shutdown()

    def __getattr__(self, name: str):
        return getattr(self.engine, name)
