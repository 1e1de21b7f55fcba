"""Benchmark: the cost of one call between Serve deployments: through Ray's object store vs direct,
and with Serve's default threads vs the local config's same-loop settings.

    python -m bench.serve_handles [calls=200] [chunks=16]

The serving app calls its router, paths and engine with ``serve_apps.openai_app.DIRECT_CALLS``
(the callee replica's gRPC server) instead of Serve's default (Ray actor tasks whose results
go through the object store). On a local Ray with nothing else deployed, one caller
deployment alternates the two kinds of handle to the same callees: a unary call returning a
router-sized answer, and a two-hop stream of ``chunks`` small chunks (caller -> path -> engine,
as a request goes).

The same three deployments run twice, as two applications: with Serve's defaults (user code
in its own thread, each handle's routing in its own loop) and with the ``RAY_SERVE_*``
settings of ``serve_apps/configs/local.yaml``'s ``runtime_env`` (both on the replica's own
loop). The two are measured in alternating rounds. Prints one JSON line: p50/p99 of each,
``unary_speedup_p50`` and ``stream_first_chunk_speedup_p50`` (by-reference p50 / direct p50,
default threads), and ``same_loop_*_direct_p50_ms`` with ``same_loop_unary_speedup_p50`` and
``same_loop_stream_speedup_p50`` (default p50 / same-loop p50, direct calls).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import ray
from pydantic import Field
from ray import serve

from bench.stats import p50_p99
from rayfleet.config import BaseConfig, load_config, read_yaml
from serve_apps.openai_app import DIRECT_CALLS

WARM_UP = 20
ROUNDS = 4  # alternating rounds of the two applications
LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "serve_apps" / "configs" / "local.yaml"


def same_loop_env() -> dict[str, str]:
    """The RAY_SERVE_* settings the local serving config gives its replicas."""
    env = read_yaml(LOCAL_CONFIG)["applications"][0]["runtime_env"]["env_vars"]
    return {name: value for name, value in env.items() if name.startswith("RAY_SERVE_")}


class HandlesBenchConfig(BaseConfig):
    calls: int = Field(200, ge=10, description="Calls of each kind and mode.")
    chunks: int = Field(16, ge=1, description="Chunks per streamed call.")


@serve.deployment
class Answerer:
    async def route(self, text: str) -> dict:
        return {"path": "base", "confidence": 0.9, "prompt_embedding": [0.1] * 16, "text": text}

    async def stream(self, chunks: int):
        for index in range(chunks):
            yield {"text": " token", "index": index}


@serve.deployment
class Relay:
    def __init__(self, answerer):
        self.by_reference = answerer.options(stream=True)
        self.direct = answerer.options(stream=True, **DIRECT_CALLS)

    async def stream(self, chunks: int, direct: bool):
        async for chunk in (self.direct if direct else self.by_reference).stream.remote(chunks):
            yield chunk


@serve.deployment
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
        return {
            f"{kind}_{'direct' if direct else 'by_reference'}": values for (kind, direct), values in timings.items()
        }


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def summary(timings: dict[str, list[float]], same_loop: dict[str, list[float]], chunks: int, env: dict) -> dict:
    figures: dict = {"bench": "serve_handles", "chunks": chunks, "same_loop_env": env}
    for name, values in timings.items():
        figures.update(p50_p99(values, f"{name}_"))
    for name in ("unary_direct", "first_chunk_direct", "stream_direct"):
        figures.update(p50_p99(same_loop[name], f"same_loop_{name}_"))
    figures["unary_speedup_p50"] = ratio(figures, "unary_by_reference_p50_ms", "unary_direct_p50_ms")
    figures["stream_first_chunk_speedup_p50"] = ratio(
        figures, "first_chunk_by_reference_p50_ms", "first_chunk_direct_p50_ms"
    )
    figures["same_loop_unary_speedup_p50"] = ratio(figures, "unary_direct_p50_ms", "same_loop_unary_direct_p50_ms")
    figures["same_loop_stream_speedup_p50"] = ratio(figures, "stream_direct_p50_ms", "same_loop_stream_direct_p50_ms")
    return figures


def ratio(figures: dict, numerator: str, denominator: str) -> float:
    return round(figures[numerator] / figures[denominator], 2)


def deploy(name: str, env: dict[str, str] | None, chunks: int):
    """Answerer, Relay and Caller as application ``name``, their replicas started with ``env``."""
    options = {"num_cpus": 0}  # six deployments must fit a 2-CPU head
    if env:
        options["runtime_env"] = {"env_vars": env}
    answerer = Answerer.options(ray_actor_options=options).bind()
    relay = Relay.options(ray_actor_options=options).bind(answerer)
    caller = serve.run(Caller.options(ray_actor_options=options).bind(answerer, relay), name=name, route_prefix=None)
    caller.measure.remote(WARM_UP, chunks).result()
    return caller


def measure_alternately(callers: dict, calls: int, chunks: int) -> dict[str, dict[str, list[float]]]:
    timings: dict[str, dict[str, list[float]]] = {name: {} for name in callers}
    for _ in range(ROUNDS):
        for name, caller in callers.items():
            for kind, values in caller.measure.remote(max(calls // ROUNDS, 1), chunks).result().items():
                timings[name].setdefault(kind, []).extend(values)
    return timings


def main(argv: list[str] | None = None) -> dict:
    config = load_config(HandlesBenchConfig, argv if argv is not None else sys.argv[1:])
    env = same_loop_env()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        serve.start(proxy_location="Disabled")  # handles only; leaves port 8000 to a running app
        callers = {
            "default": deploy("bench_handles", None, config.chunks),
            "same_loop": deploy("bench_handles_same_loop", env, config.chunks),
        }
        timings = measure_alternately(callers, config.calls, config.chunks)
        figures = summary(timings["default"], timings["same_loop"], config.chunks, env)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
