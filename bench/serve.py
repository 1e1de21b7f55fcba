"""Load test of the running serving app with Locust (headless, in process): steady load, then a 10x spike.

    make serve && python -m bench.serve                     # against http://127.0.0.1:8000
    python -m bench.serve steady_users=4 spike_seconds=90 models=[rayfleet,rayfleet-base]

Three phases, one JSON line at the end:

1. router overhead, on an otherwise idle app: the same short prompt sent alternately as the
   routed model (``rayfleet``: ingress -> router -> path) and straight to the path the router
   picks (e.g. ``rayfleet-base``: ingress -> path); overhead = p50 routed - p50 direct (and
   the p50 of each adjacent pair's difference, which shares the moment's load), and
   ``router_hop_p50_ms``, the router call as the ingress timed it (``x-rayfleet-router-ms``),
   which generation-time noise does not blur;
2. steady load: ``steady_users`` Locust users, each streaming chat requests over ``models``;
3. spike: ``spike_multiplier`` times the users at once; ``spike_p99_ms`` counts requests
   started after ``spike_settle_seconds`` (the time autoscaling gets to react).

Per path: p50/p99 latency and time to first token; overall requests/s, errors by status
(503s are the deliberate overload answer), and the replicas of each deployment over time
(from the Ray dashboard's Serve API).
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()  # Locust runs on gevent; patch before anything opens a socket

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

import gevent  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from locust import HttpUser, between, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from pydantic import Field  # noqa: E402

from bench.stats import p50_p99, percentile  # noqa: E402
from rayfleet.config import BaseConfig, config_or_exit  # noqa: E402

PROMPTS = [
    "Which dataset do the authors evaluate their approach on?",
    "What problem does the paper on neural machine translation address?",
    "What's a good name for a pet goldfish?",
    "Give me three tips for sleeping better.",
    "Summarize in one sentence why unit tests matter.",
    "What is the capital of Portugal?",
]


class BenchServeConfig(BaseConfig):
    """Options of the serving benchmark."""

    base_url: str = Field("http://127.0.0.1:8000", description="The app's address.")
    dashboard_url: str = Field("http://127.0.0.1:8265", description="Ray dashboard, for replica counts.")
    api_key: str | None = Field(
        None, description="API key; default: the first of RAYFLEET_API_KEYS, else of keys_file."
    )
    keys_file: str = Field(".run/serve-api-keys", description="The keys `make serve` wrote (its key when it made one).")
    models: list[str] = Field(
        default_factory=lambda: ["rayfleet", "rayfleet-base", "rayfleet-rag"],
        description="Models the users request, evenly.",
    )
    max_tokens: int = Field(16, ge=1, description="max_tokens of every request.")
    overhead_pairs: int = Field(
        100, ge=5, description="Routed/direct pairs for the router overhead (one-token answers vary by tens of ms)."
    )
    steady_users: int = Field(2, ge=1, description="Concurrent users under steady load.")
    steady_seconds: float = Field(
        150, gt=0, description="Length of the steady phase (150 s at 2 users: ~75 requests for its p99)."
    )
    spike_multiplier: int = Field(10, ge=1, description="Users in the spike, as a multiple of steady_users.")
    spike_seconds: float = Field(90, gt=0, description="Length of the spike phase.")
    spike_settle_seconds: float = Field(
        30, ge=0, description="Spike requests started before this are not in spike_p99_ms."
    )
    think_seconds: float = Field(1.0, ge=0, description="Mean pause of a user between requests.")
    replica_poll_seconds: float = Field(5, gt=0, description="How often replica counts are sampled.")


RECORDS: list[dict] = []


def api_key(config: BenchServeConfig) -> str:
    key = config.api_key or os.environ.get("RAYFLEET_API_KEYS", "").split(",")[0].strip()
    if not key and os.path.isfile(config.keys_file):
        with open(config.keys_file) as keys:
            key = next((line.strip() for line in keys if line.strip() and not line.startswith("#")), "")
    if not key:
        sys.exit(f"set RAYFLEET_API_KEYS (or api_key=...) to the app's API key; {config.keys_file} holds none")
    return key


def stream_chat(session, config: BenchServeConfig, model: str, phase: str, **request_options) -> dict:
    """One streaming chat request, timed to the first token and to the end."""
    body = {"model": model, "max_tokens": config.max_tokens, "stream": True,
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}]}  # fmt: skip
    started = time.perf_counter()
    record = {"phase": phase, "model": model, "started": time.time(), "ttft_ms": None}
    response = session.post(
        f"{config.base_url}/v1/chat/completions", json=body, stream=True, timeout=300, **request_options
    )
    try:
        record["status"] = response.status_code
        record["path"] = response.headers.get("x-rayfleet-path")
        for line in response.iter_lines(chunk_size=None):  # lines as they arrive, not per 512 bytes
            if line.startswith(b"data: ") and record["ttft_ms"] is None and b'"content"' in line:
                record["ttft_ms"] = (time.perf_counter() - started) * 1000
    finally:
        response.close()
    record["latency_ms"] = (time.perf_counter() - started) * 1000
    return record


def chat_once(config: BenchServeConfig, key: str, model: str, prompt: str) -> tuple[float, requests.Response]:
    """Latency (ms) and response of one non-streaming one-token request."""
    started = time.perf_counter()
    response = requests.post(
        f"{config.base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=300,
        json={"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": prompt}]},
    )  # fmt: skip
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000, response


def router_overhead(config: BenchServeConfig, key: str) -> dict:
    """Routed minus direct p50, and the router hop the ingress itself timed (x-rayfleet-router-ms).

    The pairs alternate which request goes first: the second of a pair finds the prompt in
    the engine's prefix cache, and always sending the direct one second would flatter it.
    """
    prompt = "What's a good name for a pet goldfish?"
    path = chat_once(config, key, "rayfleet", prompt)[1].headers["x-rayfleet-path"]  # warms both
    routed, direct, hops = [], [], []
    for pair in range(config.overhead_pairs):
        for model in ("rayfleet", f"rayfleet-{path}")[:: 1 if pair % 2 == 0 else -1]:
            latency, response = chat_once(config, key, model, prompt)
            if model == "rayfleet":
                routed.append(latency)
                hops.append(float(response.headers["x-rayfleet-router-ms"]))
            else:
                direct.append(latency)
    return {
        "router_overhead_p50_ms": round(float(np.median(routed) - np.median(direct)), 2),
        "router_overhead_paired_p50_ms": round(float(np.median(np.subtract(routed, direct))), 2),
        **p50_p99(hops, "router_hop_"), "routed_p50_ms": percentile(routed, 50),
        "direct_p50_ms": percentile(direct, 50),
    }  # fmt: skip


def make_user_class(config: BenchServeConfig, key: str, phase: dict):
    class ChatUser(HttpUser):
        host = config.base_url
        wait_time = between(0, 2 * config.think_seconds)

        @task
        def chat(self):
            model = random.choice(config.models)
            try:
                RECORDS.append(
                    stream_chat(
                        self.client,
                        config,
                        model,
                        phase["name"],
                        headers={"Authorization": f"Bearer {key}"},
                        name=model,
                    )
                )
            except requests.RequestException as error:
                RECORDS.append({"phase": phase["name"], "model": model, "started": time.time(),
                                "status": type(error).__name__,
                                "path": None, "ttft_ms": None, "latency_ms": None})  # fmt: skip

    return ChatUser


def poll_replicas(config: BenchServeConfig, samples: list, started: float) -> None:
    while True:
        try:
            applications = requests.get(f"{config.dashboard_url}/api/serve/applications/", timeout=5).json()[
                "applications"
            ]
            counts = {
                name: sum(1 for replica in deployment["replicas"] if replica["state"] == "RUNNING")
                for application in applications.values()
                for name, deployment in application["deployments"].items()
            }
            samples.append({"t_s": round(time.time() - started, 1), **counts})
        except (requests.RequestException, KeyError, ValueError):
            pass
        gevent.sleep(config.replica_poll_seconds)


def summarize(records: list[dict], phase_starts: dict) -> dict:
    ok = [r for r in records if r["status"] == 200]
    steady = [r["latency_ms"] for r in ok if r["phase"] == "steady"]
    settled = phase_starts["spike"] + phase_starts["settle"]
    spike = [r["latency_ms"] for r in ok if r["phase"] == "spike" and r["started"] >= settled]
    by_path = defaultdict(list)
    for record in ok:
        by_path[record["path"]].append(record)
    steady_p99, spike_p99 = percentile(steady, 99), percentile(spike, 99)
    statuses = Counter(str(r["status"]) for r in records)
    duration = max(r["started"] for r in records) - min(r["started"] for r in records)
    return {
        "steady_p99_ms": steady_p99, "spike_p99_ms": spike_p99,
        "spike_p99_ratio": round(spike_p99 / steady_p99, 2) if steady_p99 and spike_p99 else None,
        "non_503_errors": sum(count for status, count in statuses.items() if status not in ("200", "503")),
        "errors_by_status": {status: count for status, count in statuses.items() if status != "200"},
        "requests": len(records), "requests_per_s": round(len(records) / duration, 2) if duration else None,
        "steady_p50_ms": percentile(steady, 50), "spike_p50_ms": percentile(spike, 50),
        "per_path": {
            path: {"requests": len(rows), **p50_p99([r["latency_ms"] for r in rows]),
                   **p50_p99([r["ttft_ms"] for r in rows], "ttft_")}
            for path, rows in sorted(by_path.items(), key=lambda item: str(item[0]))
        },
    }  # fmt: skip


def run_phase(runner, users: int, seconds: float, phase: dict, name: str) -> None:
    phase["name"] = name
    runner.start(users, spawn_rate=users)
    gevent.sleep(seconds)


def main(config: BenchServeConfig) -> dict:
    key = api_key(config)
    figures = router_overhead(config, key)
    phase: dict = {"name": "steady"}
    environment = Environment(user_classes=[make_user_class(config, key, phase)])
    runner = environment.create_local_runner()
    started, replicas = time.time(), []
    poller = gevent.spawn(poll_replicas, config, replicas, started)
    run_phase(runner, config.steady_users, config.steady_seconds, phase, "steady")
    phase_starts = {"spike": time.time(), "settle": config.spike_settle_seconds}
    run_phase(runner, config.steady_users * config.spike_multiplier, config.spike_seconds, phase, "spike")
    runner.quit()
    poller.kill()
    report = {"bench": "serve", **figures, **summarize(RECORDS, phase_starts), "replicas_over_time": replicas,
              "steady_users": config.steady_users, "spike_users": config.steady_users * config.spike_multiplier,
              "max_tokens": config.max_tokens, "models": config.models}  # fmt: skip
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main(config_or_exit(BenchServeConfig, sys.argv[1:]))
