"""Benchmark: the router's accuracy and per-request latency on its held-out split.

    python -m bench.router [router=PATH]

``router`` is a folder written by ``jobs.train_router``; without it the router is
trained first on the default set (into a temporary folder). Each held-out prompt is
routed alone, as an online request is (embedding + calibrated classifier + threshold),
after a few warm-up calls, on ``threads`` torch threads (one request is too small to gain
from more, and on a shared machine extra threads only wait: measured 31 ms p50 on one
thread vs 85 ms on two here). The honest baseline is the majority label. Prints one JSON
line: accuracy, routed_accuracy (uncertain requests sent to the default path),
majority_baseline_accuracy, p50_ms, p99_ms, n_requests.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from jobs.train_router import TrainRouterConfig
from jobs.train_router import main as train
from rayfleet import storage
from rayfleet.config import BaseConfig, load_config
from rayfleet.routing import RequestRouter

WARM_UP = 5


class RouterBenchConfig(BaseConfig):
    router: str | None = Field(
        None, description="Folder of a trained router; unset: train one on the default set first."
    )
    threads: int = Field(1, ge=1, description="torch threads while routing (one request at a time).")


def measure(router_uri: str, threads: int) -> dict:
    import torch

    router = RequestRouter.load(router_uri)
    torch.set_num_threads(threads)
    heldout = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(router_uri, "heldout.parquet"))))
    texts, labels = heldout["text"].to_pylist(), heldout["label"].to_pylist()
    for text in texts[:WARM_UP]:
        router.route(text)
    decisions, milliseconds = [], []
    for text in texts:
        started = time.perf_counter()
        decisions.append(router.route(text))
        milliseconds.append((time.perf_counter() - started) * 1000)
    majority = max(set(labels), key=labels.count)
    return {
        "bench": "router",
        "accuracy": round(float(np.mean([d.predicted == label for d, label in zip(decisions, labels)])), 4),
        "routed_accuracy": round(float(np.mean([d.route == label for d, label in zip(decisions, labels)])), 4),
        "majority_baseline_accuracy": round(labels.count(majority) / len(labels), 4),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 2),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "n_requests": len(texts),
        "labels": router.labels,
        "threshold": router.threshold,
        "threads": threads,
        "router": router_uri,
    }


def main(config: RouterBenchConfig) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        router_uri = config.router
        if router_uri is None:
            router_uri = storage.join(scratch, "router")
            train(TrainRouterConfig(output=router_uri))
        result = measure(router_uri, config.threads)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(load_config(RouterBenchConfig, sys.argv[1:]))
