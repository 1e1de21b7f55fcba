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

    report = main(MonitorConfig(logs=f"{s3_prefix}/logs", output=f"{s3_prefix}/monitor", recent_hours=6,
                                baseline_hours=24, until=NOW))  # fmt: skip

    assert (report["baseline_requests"], report["recent_requests"]) == (600, 600)
    assert report["drift_verdict"] == "drift"
    assert {"route_psi", "prompt_tokens_psi", "prompt_embedding_psi", "relevance_psi", "error_rate"} <= set(
        report["drift_flags"]
    )
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
    recent = log_rows(
        rng, 100, NOW - dt.timedelta(hours=5), 5, ["rag", "base"], [0.5, 0.5], 40, arms={"a": 300.0, "b": 250.0}
    )
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
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['fallback'.*REQUEST_LOG_SCHEMA"):
        main(MonitorConfig(logs=str(tmp_path / "bad"), output=str(tmp_path / "out")))


def monitor(tmp_path, **settings) -> dict:
    return main(MonitorConfig(logs=str(tmp_path / "logs"), output=str(tmp_path / "out"), recent_hours=6,
                              baseline_hours=24, min_requests=50, **settings))  # fmt: skip


def test_a_jump_to_half_the_requests_failing_is_drift(tmp_path):
    # The two-proportion test's p-value underflows to exactly 0 for the largest shifts: the most significant, not none.
    rng = np.random.default_rng(2)
    baseline = log_rows(rng, 3000, NOW - dt.timedelta(hours=30), 24, ["rag", "base"], [0.5, 0.5], 40)
    recent = log_rows(rng, 3000, NOW - dt.timedelta(hours=5), 5, ["rag", "base"], [0.5, 0.5], 40, error_share=0.5)
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), baseline + recent)
    report = monitor(tmp_path)
    assert report["drift"]["error_rate"]["p_value"] == 0.0
    assert "error_rate" in report["drift_flags"] and report["drift_verdict"] == "drift"


def test_logs_from_before_a_column_was_logged_are_read_beside_newer_ones(tmp_path):
    rng = np.random.default_rng(3)
    old = log_rows(rng, 200, NOW - dt.timedelta(hours=30), 24, ["rag", "base"], [0.5, 0.5], 40)
    for row in old:
        del row["prompt_embedding"], row["relevance"]
    new = log_rows(rng, 100, NOW - dt.timedelta(hours=5), 5, ["rag", "base"], [0.5, 0.5], 40)
    write_logs(str(tmp_path / "logs" / "old.parquet"), old)
    write_logs(str(tmp_path / "logs" / "new.parquet"), new)
    report = monitor(tmp_path)
    assert report["baseline_requests"] == 200 and report["recent_requests"] == 100
    assert report["drift"]["prompt_embedding_psi"]["value"] is None  # nothing to compare with before
    assert report["drift_verdict"] == "stable"


def test_output_length_is_measured_per_answer_so_requests_for_several_answers_are_no_drift(tmp_path):
    rng = np.random.default_rng(7)
    baseline = log_rows(rng, 300, NOW - dt.timedelta(hours=30), 24, ["rag", "base"], [0.5, 0.5], 40)  # before `n`
    recent = log_rows(rng, 300, NOW - dt.timedelta(hours=5), 5, ["rag", "base"], [0.5, 0.5], 40)
    for row in recent:  # four answers of the same lengths each
        row["answer_tokens"] = [int(rng.poisson(60)) for _ in range(4)]
        row["completion_tokens"] = sum(row["answer_tokens"])
    write_logs(str(tmp_path / "logs" / "old.parquet"), baseline)
    write_logs(str(tmp_path / "logs" / "new.parquet"), recent)
    lengths = monitor(tmp_path)["drift"]["completion_tokens_psi"]
    assert lengths["recent_mean"] == pytest.approx(60, abs=3) and lengths["value"] < 0.2

    for row in recent:  # four times longer single answers are drift
        row["answer_tokens"] = [row["completion_tokens"]]
    write_logs(str(tmp_path / "logs" / "new.parquet"), recent)
    assert "completion_tokens_psi" in monitor(tmp_path)["drift_flags"]


def test_a_changed_embedding_size_is_reported_as_not_comparable(tmp_path):
    rng = np.random.default_rng(4)
    baseline = log_rows(rng, 200, NOW - dt.timedelta(hours=30), 24, ["rag", "base"], [0.5, 0.5], 40)
    recent = log_rows(rng, 100, NOW - dt.timedelta(hours=5), 5, ["rag", "base"], [0.5, 0.5], 40)
    for row in recent[:40]:
        row["prompt_embedding"] = row["prompt_embedding"] * 2  # 16 dimensions for a while, then 8 again
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), baseline + recent)
    assert monitor(tmp_path)["drift"]["prompt_embedding_psi"]["value"] is not None  # the window's usual size
    for row in recent:
        row["prompt_embedding"] = row["prompt_embedding"][:8] * 2
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), baseline + recent)
    measure = monitor(tmp_path)["drift"]["prompt_embedding_psi"]
    assert measure["value"] is None and "not comparable" in measure["note"] and not measure["flagged"]


def test_empty_log_files_give_a_report_of_no_requests(tmp_path):
    rows = log_rows(np.random.default_rng(5), 1, NOW, 1, ["rag"], [1.0], 40)
    write_table(str(tmp_path / "logs" / "part-1.parquet"), pa.Table.from_pylist(rows).slice(0, 0))
    report = monitor(tmp_path)
    assert report["recent_requests"] == 0 and report["drift_verdict"].startswith("too few requests")


def test_equal_arms_are_too_early_not_a_winner(tmp_path):
    rng = np.random.default_rng(6)
    rows = log_rows(rng, 400, NOW - dt.timedelta(hours=5), 5, ["rag"], [1.0], 40, arms={"a": 100.0, "b": 100.0})
    for row in rows:
        row["latency_ms"] = 100.0  # identical latencies: the t-test's p-value is nan
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), rows)
    verdict = monitor(tmp_path)["ab"]["adapter-v1-v2"]
    assert verdict["verdict"] == "too_early"
    with pytest.raises(ValueError, match="primary_metric"):
        MonitorConfig(ab={"primary_metric": "error"})


def strict_json(text: str) -> dict:
    """JSON as a strict parser reads it: NaN or Infinity is an error."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the report"))


def test_a_figure_logged_by_a_few_requests_is_not_compared_and_the_verdict_stays_stable(tmp_path):
    """Three recent requests carrying a prompt length, a relevance score and an embedding would give a
    PSI of 4 or more by chance: the measure says it has too few values instead of flagging drift."""
    rng = np.random.default_rng(7)
    baseline = log_rows(rng, 300, NOW - dt.timedelta(hours=30), 24, ["rag", "base"], [0.5, 0.5], 40)
    recent = log_rows(rng, 100, NOW - dt.timedelta(hours=5), 5, ["rag", "base"], [0.5, 0.5], 40)
    for row in recent[3:]:
        row["prompt_tokens"] = row["relevance"] = row["prompt_embedding"] = None
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), baseline + recent)
    report = monitor(tmp_path, until=NOW)
    for name in ("prompt_tokens_psi", "relevance_psi", "prompt_embedding_psi"):
        measure = report["drift"][name]
        assert measure["value"] is None and not measure["flagged"], name
        assert "too few values to compare" in measure["note"] and "min_requests 50" in measure["note"]
    assert report["drift"]["completion_tokens_psi"]["value"] is not None
    assert report["drift_verdict"] == "stable"
    prom = (tmp_path / "out" / report["run_id"] / "drift.prom").read_text()
    assert 'measure="prompt_tokens_psi"' not in prom and 'rayfleet_drift_flagged{measure="route_psi"} 0.0' in prom


def test_an_arm_that_answers_nothing_is_not_called_a_tie_and_odd_rows_are_counted_not_fatal(tmp_path):
    """Arm b fails every request: its latency cannot be compared, and the verdict says so with both
    error rates. Rows without a status, an arm (null or blank) or a time, and NaN figures, are read and
    accounted for."""
    rng = np.random.default_rng(8)
    rows = log_rows(rng, 400, NOW - dt.timedelta(hours=5), 5, ["rag"], [1.0], 40, arms={"a": 100.0, "b": 100.0})
    for row in rows:
        if row["arm"] == "b":
            row["status"] = 500
    extra = log_rows(rng, 30, NOW - dt.timedelta(hours=4), 1, ["rag"], [1.0], 40, arms={"a": 100.0})
    for index, row in enumerate(extra):
        row.update({"status": None} if index < 10 else {"arm": [None, "", " "][index % 3]} if index < 20
                   else {"created_at": None})  # fmt: skip
        row["latency_ms"], row["relevance"] = float("nan"), float("nan")
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), rows + extra)
    report = monitor(tmp_path, until=NOW)
    test = report["ab"]["adapter-v1-v2"]
    assert test["verdict"] == "not_comparable" and "arms ['b'] answered under 2 requests" in test["reason"]
    assert "b 1.0" in test["reason"] and test["arms"]["b"]["error_rate"] == 1.0
    assert test["arms"]["a"]["error_rate"] == 0.0 and test["requests_without_arm"] == 10, "null or blank"
    assert sorted(test["arms"]) == ["a", "b"]
    assert report["windows"]["rows_read"] == 430 and report["windows"]["rows_outside"]["no_time"] == 10
    strict_json((tmp_path / "out" / report["run_id"] / "report.json").read_text())


def test_a_row_dated_in_the_future_does_not_move_the_windows_past_every_other_row(tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    rng = np.random.default_rng(9)
    rows = log_rows(rng, 300, now - dt.timedelta(hours=29), 22, ["rag"], [1.0], 40) + log_rows(
        rng, 100, now - dt.timedelta(hours=5), 5, ["rag"], [1.0], 40)  # fmt: skip
    rows[-1]["created_at"] = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)  # a replica's clock far ahead
    for row in rows:
        del row["ttft_ms"]  # not read by the monitor, so not required
    write_logs(str(tmp_path / "logs" / "part-1.parquet"), rows)
    report = monitor(tmp_path)
    assert (report["baseline_requests"], report["recent_requests"]) == (300, 99)
    assert report["windows"]["rows_outside"]["after_recent"] == 1
    assert report["drift_verdict"] == "stable"
