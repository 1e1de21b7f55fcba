"""Benchmark: the cost of one call between Serve deployments, through Ray's object store vs direct.

    python -m bench.serve_handles [calls=200] [chunks=16]

The serving app calls its router, paths and engine with ``serve_apps.openai_app.DIRECT_CALLS``
(the callee replica's gRPC server) instead of Serve's default (Ray actor tasks whose results
go through the object store). On a local Ray with nothing else deployed, one caller
deployment alternates the two kinds of handle to the same callees: a unary call returning a
router-sized answer, and a two-hop stream of ``chunks`` small chunks (caller -> path -> engine,
as a request goes). Prints one JSON line: p50/p99 of each, and ``unary_speedup_p50`` and
``stream_first_chunk_speedup_p50`` (by-reference p50 / direct p50).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import ray
from pydantic import Field
from ray import serve

from bench.stats import p50_p99
from rayfleet.config import BaseConfig, load_config
from serve_apps.openai_app import DIRECT_CALLS

WARM_UP = 20
NO_CPU = {"ray_actor_options": {"num_cpus": 0}}  # three deployments must fit a 2-CPU head


class HandlesBenchConfig(BaseConfig):
    calls: int = Field(200, ge=10, description="Calls of each kind and mode.")
    chunks: int = Field(16, ge=1, description="Chunks per streamed call.")


@serve.deployment(**NO_CPU)
class Answerer:
    async def route(self, text: str) -> dict:
        return {"path": "base", "confidence": 0.9, "prompt_embedding": [0.1] * 16, "text": text}

    async def stream(self, chunks: int):
        for index in range(chunks):
            yield {"text": " token", "index": index}


@serve.deployment(**NO_CPU)
class Relay:
    def __init__(self, answerer):
        self.by_reference = answerer.options(stream=True)
        self.direct = answerer.options(stream=True, **DIRECT_CALLS)

    async def stream(self, chunks: int, direct: bool):
        async for chunk in (self.direct if direct else self.by_reference).stream.remote(chunks):
            yield chunk


@serve.deployment(**NO_CPU)
class Caller:
    def __init__(self, answerer, relay):
        self.unary = {False: answerer, True: answerer.options(**DIRECT_CALLS)}
        self.streams = {False: relay.options(stream=True), True: relay.options(stream=True, **DIRECT_CALLS)}

    async def measure(self, calls: int, chunks: int) -> dict:
        timings = {(kind, direct): [] for kind in ("unary", "first_chunk", "stream") for direct in (False, True)}
        for index in range(calls):
            for direct in (index % 2 == 0, index % 2 == 1):  # alternate which goes first
                started = time.perf_counter()
                await self.unary[direct].route.remote("What datasets did the authors use?")
                timings["unary", direct].append(elapsed_ms(started))
                started, first = time.perf_counter(), None
                async for _ in self.streams[direct].stream.remote(chunks, direct):
                    first = first or elapsed_ms(started)
                timings["first_chunk", direct].append(first)
                timings["stream", direct].append(elapsed_ms(started))
            await asyncio.sleep(0.005)
        return {f"{kind}_{'direct' if direct else 'by_reference'}": values for (kind, direct), values in timings.items()}


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def summary(timings: dict[str, list[float]], chunks: int) -> dict:
    figures: dict = {"bench": "serve_handles", "chunks": chunks}
    for name, values in timings.items():
        figures.update(p50_p99(values, f"{name}_"))
    figures["unary_speedup_p50"] = round(figures["unary_by_reference_p50_ms"] / figures["unary_direct_p50_ms"], 2)
    figures["stream_first_chunk_speedup_p50"] = round(
        figures["first_chunk_by_reference_p50_ms"] / figures["first_chunk_direct_p50_ms"], 2
    )
    return figures


def main(argv: list[str] | None = None) -> dict:
    config = load_config(HandlesBenchConfig, argv if argv is not None else sys.argv[1:])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        serve.start(proxy_location="Disabled")  # handles only; leaves port 8000 to a running app
        answerer = Answerer.bind()
        caller = serve.run(Caller.bind(answerer, Relay.bind(answerer)), name="bench_handles", route_prefix=None)
        caller.measure.remote(WARM_UP, config.chunks).result()
        figures = summary(caller.measure.remote(config.calls, config.chunks).result(), config.chunks)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
