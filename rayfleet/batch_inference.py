"""Generate replies to many conversations on a Ray Data actor pool of engines.

The thin Ray glue that batch jobs without their own commit logic share (evaluation,
judging): each actor holds one engine (:class:`rayfleet.engines.thread_bound.ThreadBoundEngine`), the
conversations stream through in batches, and the replies come back in input order::

    generations = generate_on_ray(conversations, EngineConfig(kind="vllm"), SamplingConfig(max_tokens=64))
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.engines.thread_bound import ThreadBoundEngine
from rayfleet.engines.base import Conversation, Generation
from rayfleet.ray_setup import WorkerPoolConfig, cluster_pool_size

logger = logging.getLogger(__name__)


class GenerationWorker:
    """Ray Data actor: one engine, one batch of JSON-encoded conversations at a time."""

    def __init__(self, engine: EngineConfig, sampling: SamplingConfig):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        started = time.monotonic()
        self.engine = ThreadBoundEngine(engine)
        self.sampling = sampling
        logger.info("%s engine for %s ready in %.1f s", self.engine.name, engine.model, time.monotonic() - started)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        conversations = [json.loads(text) for text in batch["conversation"]]
        generations = self.engine.generate(conversations, self.sampling)
        return {
            "position": batch["position"],
            "text": np.array([generation.text for generation in generations], dtype=object),
            "prompt_tokens": np.array([generation.prompt_tokens for generation in generations]),
            "completion_tokens": np.array([generation.completion_tokens for generation in generations]),
            "finish_reason": np.array([generation.finish_reason for generation in generations], dtype=object),
        }


def generate_on_ray(
    conversations: list[Conversation],
    engine: EngineConfig,
    sampling: SamplingConfig,
    workers: WorkerPoolConfig | None = None,
    batch_size: int = 32,
) -> list[Generation]:
    """One :class:`Generation` per conversation, in order, from an actor pool on the connected cluster."""
    import ray

    if not conversations:
        return []
    size, claim = cluster_pool_size(workers or WorkerPoolConfig())
    size = max(1, min(size, -(-len(conversations) // batch_size)))
    items = [
        {"position": index, "conversation": json.dumps(conversation)}
        for index, conversation in enumerate(conversations)
    ]
    rows = (
        ray.data.from_items(items)
        .map_batches(
            GenerationWorker,
            batch_size=batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"engine": engine, "sampling": sampling},
            compute=ray.data.ActorPoolStrategy(size=size),
            **claim,
        )
        .take_all()
    )
    ordered = sorted(rows, key=lambda row: int(row["position"]))
    if len(ordered) != len(conversations):
        raise RuntimeError(f"the engine pool returned {len(ordered)} replies for {len(conversations)} conversations")
    return [
        Generation(
            str(row["text"]), int(row["prompt_tokens"]), int(row["completion_tokens"]), str(row["finish_reason"])
        )
        for row in ordered
    ]
