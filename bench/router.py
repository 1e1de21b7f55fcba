"""Benchmark: the router's accuracy and per-request latency, against the transformer baseline.

    python -m bench.router [threads=1]

Two routers are trained on the default set (same split, same classifier), each into a
temporary folder: the shipped one on static MiniLM embeddings (``all-minilm-l6-v2-static``,
compiled classifier) and the baseline on the transformer MiniLM (``all-minilm-l6-v2``) with
scikit-learn's own ``predict_proba``, the router as it was before. Each held-out prompt is
routed alone, as an online request is (embedding + calibrated classifier + threshold),
after a few warm-up calls, on ``threads`` torch threads (one request is too small to gain
from more). The majority label is the accuracy floor. Prints one JSON line: accuracy,
routed_accuracy (uncertain requests sent to the default path), p50_ms, p99_ms, the same
for the baseline, and ``speedup_p50`` (baseline p50 / ours).
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

from bench.stats import p50_p99
from jobs.train_router import TrainRouterConfig
from jobs.train_router import main as train
from rayfleet import storage
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.routing import RequestRouter

WARM_UP = 5
BASELINE_EMBEDDING_MODEL = "all-minilm-l6-v2"


class RouterBenchConfig(BaseConfig):
    threads: int = Field(1, ge=1, description="torch threads while routing (one request at a time).")


def route_timed(router: RequestRouter, texts: list[str]) -> tuple[list, list[float]]:
    """Each text routed alone, after a few warm-up calls: decisions and milliseconds."""
    for text in texts[:WARM_UP]:
        router.route(text)
    decisions, milliseconds = [], []
    for text in texts:
        started = time.perf_counter()
        decisions.append(router.route(text))
        milliseconds.append((time.perf_counter() - started) * 1000)
    return decisions, milliseconds


def measure(router: RequestRouter, texts: list[str], labels: list[str]) -> dict:
    decisions, milliseconds = route_timed(router, texts)
    return {
        "accuracy": round(float(np.mean([d.predicted == label for d, label in zip(decisions, labels)])), 4),
        "routed_accuracy": round(float(np.mean([d.route == label for d, label in zip(decisions, labels)])), 4),
        **p50_p99(milliseconds),
    }


def sklearn_router(router_uri: str) -> RequestRouter:
    """The router at ``router_uri`` with scikit-learn's ``predict_proba``, as before compiling."""
    router = RequestRouter.load(router_uri)
    router._predict_proba = router.classifier.predict_proba
    return router


def main(config: RouterBenchConfig) -> dict:
    import torch

    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory() as scratch:
        router_uri, baseline_uri = storage.join(scratch, "router"), storage.join(scratch, "baseline")
        train(TrainRouterConfig(output=router_uri))
        train(TrainRouterConfig(output=baseline_uri, embedding_model=BASELINE_EMBEDDING_MODEL))
        heldout = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(router_uri, "heldout.parquet"))))
        texts, labels = heldout["text"].to_pylist(), heldout["label"].to_pylist()
        router = RequestRouter.load(router_uri)
        ours, baseline = measure(router, texts, labels), measure(sklearn_router(baseline_uri), texts, labels)
    majority = max(set(labels), key=labels.count)
    result = {
        "bench": "router",
        **ours,
        **{f"baseline_{key}": value for key, value in baseline.items()},
        "speedup_p50": round(baseline["p50_ms"] / ours["p50_ms"], 1),
        "majority_baseline_accuracy": round(labels.count(majority) / len(labels), 4),
        "n_requests": len(texts),
        "labels": router.labels,
        "threshold": router.threshold,
        "embedding_model": router.embedder.model_name,
        "baseline_embedding_model": BASELINE_EMBEDDING_MODEL,
        "threads": config.threads,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(config_or_exit(RouterBenchConfig, sys.argv[1:]))
