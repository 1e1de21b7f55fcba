"""The drift and A/B monitor on request logs in the local S3 (written as the serving app writes them)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from jobs.monitor import MonitorConfig, main
from rayfleet import storage
from rayfleet.tables import write_table

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)


def log_rows(rng, count: int, start: dt.datetime, hours: float, paths: list[str], weights: list[float],
             prompt_mean: float, arms: dict[str, float] | None = None, error_share: float = 0.0,
             relevance_mean: float = 0.55) -> list[dict]:  # fmt: skip
    rows = []
    for index in range(count):
        arm = None
        latency = float(rng.gamma(4, 50))
        if arms:
            arm = list(arms)[index % len(arms)]
            latency = float(rng.normal(arms[arm], 20))
        rows.append({
            "created_at": start + dt.timedelta(hours=hours * index / count),
            "path": str(rng.choice(paths, p=weights)), "fallback": bool(rng.random() < 0.02),
            "status": 500 if rng.random() < error_share else 200, "latency_ms": latency, "ttft_ms": latency / 4,
            "prompt_tokens": int(rng.poisson(prompt_mean)), "completion_tokens": int(rng.poisson(60)),
            "ab_test": "adapter-v1-v2" if arms else None, "arm": arm,
            "prompt_embedding": list(rng.normal(0 if prompt_mean < 100 else 1, 1, 8)),
            "relevance": float(rng.normal(relevance_mean, 0.08)) if index % 3 else None,  # a third not routed
        })  # fmt: skip
    return rows


def write_logs(uri: str, rows: list[dict]) -> None:
    write_table(uri, pa.Table.from_pylist(rows))


def test_a_shifted_recent_window_is_flagged_and_the_faster_arm_wins(s3_prefix):
    rng = np.random.default_rng(0)
    baseline = log_rows(rng, 600, NOW - dt.timedelta(hours=30), 24, ["rag", "base"], [0.5, 0.5], 40)
    recent = log_rows(rng, 600, NOW - dt.timedelta(hours=5), 5, ["rag", "base", "finetuned"], [0.2, 0.3, 0.5], 160,
                      arms={"a": 300.0, "b": 250.0}, error_share=0.1, relevance_mean=0.35)  # fmt: skip
    write_logs(f"{s3_prefix}/logs/part-1.parquet", baseline)
    write_logs(f"{s3_prefix}/logs/part-2.parquet", recent)

    report = main(MonitorConfig(logs=f"{s3_prefix}/logs", output=f"{s3_prefix}/monitor", recent_hours=6, baseline_hours=24,
                                until=NOW))  # fmt: skip

    assert (report["baseline_requests"], report["recent_requests"]) == (600, 600)
    assert report["drift_verdict"] == "drift"
    assert {"route_psi", "prompt_tokens_psi", "prompt_embedding_psi", "relevance_psi", "error_rate"} <= set(report["drift_flags"])
    relevance = json.loads(storage.read_bytes(report["report"]))["drift"]["relevance_psi"]
    assert relevance["recent_mean"] < relevance["baseline_mean"] - 0.1, "questions moved away from the documents"
    assert "completion_tokens_psi" not in report["drift_flags"], "output lengths did not move"
    assert "fallback_rate" not in report["drift_flags"]
    verdict = report["ab"]["adapter-v1-v2"]
    assert verdict["verdict"] == "winner" and verdict["winner"] == "b"
    assert verdict["arms"]["a"]["requests"] == verdict["arms"]["b"]["requests"] == 300
    prom = storage.read_bytes(report["report"].replace("report.json", "drift.prom")).decode()
    assert 'rayfleet_drift_flagged{measure="route_psi"} 1.0' in prom
    assert json.loads(storage.read_bytes(report["report"]))["drift_flags"] == report["drift_flags"]


def test_a_stable_window_is_not_flagged_and_small_arms_are_too_early(tmp_path):
    rng = np.random.default_rng(1)
    baseline = log_rows(rng, 400, NOW - dt.timedelta(hours=30), 24, ["rag", "base"], [0.5, 0.5], 40)
    recent = log_rows(rng, 100, NOW - dt.timedelta(hours=5), 5, ["rag", "base"], [0.5, 0.5], 40, arms={"a": 300.0, "b": 250.0})
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), baseline + recent)

    report = main(MonitorConfig(logs=str(tmp_path / "logs"), output=str(tmp_path / "out"), recent_hours=6,
                                baseline_hours=24, min_requests=50))  # fmt: skip

    assert report["drift_verdict"] == "stable" and report["drift_flags"] == []
    verdict = report["ab"]["adapter-v1-v2"]
    assert verdict["verdict"] == "too_early" and "under 100 requests" in verdict["reason"]


def test_missing_logs_and_columns_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no request logs"):
        main(MonitorConfig(logs=str(tmp_path / "none"), output=str(tmp_path / "out")))
    write_logs(str(tmp_path / "bad" / "part.parquet"), [{"created_at": NOW, "path": "rag"}])
    with pytest.raises(ValueError, match="lack columns"):
        main(MonitorConfig(logs=str(tmp_path / "bad"), output=str(tmp_path / "out")))
