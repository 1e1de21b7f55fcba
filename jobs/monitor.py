"""Drift and A/B analysis of the serving request logs.

Run it anywhere the same way::

    python -m jobs.monitor                          # embedded defaults: the local serving app's logs in the local S3
    python -m jobs.monitor logs=s3://bucket/serving/requests recent_hours=6 baseline_hours=72
    ray job submit --working-dir . -- python -m jobs.monitor logs=s3://bucket/serving/requests

The request logs (``schemas.REQUEST_LOG_SCHEMA``, written by the serving app) are split
into a recent window (the last ``recent_hours`` before ``until``) and the baseline window
before it. Drift compares the two: the route distribution, prompt embeddings (a projection
logged by the router, when present), prompt and output lengths (population stability
index each), the relevance gate's best-passage scores when logged (a fall means users ask about
what the documents do not hold), and fallback and error rates (two-proportion tests). Measures above their
thresholds are flagged (the route distribution and the rates only when the change is also
significant at ``thresholds.alpha``: a quiet hour's noise is not drift). For each A/B test in the recent window,
every arm gets its request count, latency, error and fallback rates with intervals; the arms are compared
with a significance test and the job says which arm wins or that it is too early.

Writes ``report.json``, ``report.html`` and ``drift.prom`` (Prometheus text format, for a
node-exporter textfile collector or a Pushgateway) under ``output/<run_id>/``, pushes the
gauges when ``pushgateway`` is set, and prints one JSON line.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
from collections import Counter
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rayfleet import storage
from rayfleet.config import BaseConfig, InputError, describe, run_job
from rayfleet.evaluation.drift import (
    categorical_psi,
    categorical_psi_p_value,
    category_shares,
    embedding_psi,
    numeric_psi,
)
from rayfleet.evaluation.stats import bootstrap_mean, two_proportion_test, welch_test
from rayfleet.tables import new_run_id, read_input_folder

logger = logging.getLogger("jobs.monitor")

LOG_COLUMNS = [
    "created_at",
    "path",
    "fallback",
    "status",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "ab_test",
    "arm",
]
EMBEDDING_COLUMN = "prompt_embedding"
RELEVANCE_COLUMN = "relevance"  # the router's relevance gate (logs before it, or without it, lack it)
ANSWERS_COLUMN = "answer_tokens"  # each of a request's n answers' length (logs before n was served lack it)


class DriftThresholds(BaseConfig):
    """When a measure counts as drift."""

    route_psi: float = Field(0.1, gt=0, description="PSI of the route distribution.")
    embedding_psi: float = Field(0.1, gt=0, description="Mean per-dimension PSI of the prompt embeddings.")
    length_psi: float = Field(0.2, gt=0, description="PSI of prompt or output token counts.")
    relevance_psi: float = Field(
        0.2,
        gt=0,
        description="PSI of the relevance gate's best-passage scores: "
        "users asking about what the documents do not hold.",
    )
    rate_change: float = Field(
        0.05, gt=0, description="Absolute change of the fallback or error rate that counts as drift..."
    )
    alpha: float = Field(
        0.01, gt=0, lt=1, description="...that is also significant at this level (rates and the route distribution)."
    )


class AbConfig(BaseConfig):
    """How A/B arms are compared."""

    min_requests_per_arm: int = Field(100, ge=2, description="Below this, the verdict is 'too early'.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the arm comparison.")
    primary_metric: Literal["latency_ms", "error_rate"] = Field(
        "latency_ms",
        description="latency_ms (of answered requests; lower wins, Welch's t-test) or error_rate (lower wins, z-test).",
    )


class MonitorConfig(BaseConfig):
    """Configuration of the drift and A/B monitor."""

    logs: str = Field(
        "s3://rayfleet/serve/request-logs", description="Request log Parquet folder written by the serving app."
    )
    output: str = Field(
        "s3://rayfleet/monitor", description="Folder/prefix for the reports and the Prometheus text file."
    )
    until: dt.datetime | None = Field(None, description="End of the recent window (UTC); default: the newest log row.")
    recent_hours: float = Field(24.0, gt=0, description="Length of the recent window.")
    baseline_hours: float = Field(168.0, gt=0, description="Length of the baseline window just before it.")
    min_requests: int = Field(50, ge=1, description="Fewest requests per window for a drift verdict.")
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds, description="Drift thresholds.")
    ab: AbConfig = Field(default_factory=AbConfig, description="A/B analysis.")
    pushgateway: str | None = Field(None, description="Prometheus Pushgateway address to push the gauges to.")


def read_logs(config: MonitorConfig) -> pa.Table:
    """The request logs; files from before a column was logged get it as nulls, and a NaN figure
    (latency, relevance) is read as a missing one."""
    if not storage.exists(config.logs):
        raise FileNotFoundError(
            f"no request logs at {config.logs}: point `logs` at the serving app's request_log folder"
        )
    try:
        logs = read_input_folder(config.logs, LOG_COLUMNS, [EMBEDDING_COLUMN, RELEVANCE_COLUMN, ANSWERS_COLUMN])
    except FileNotFoundError:
        raise
    except ValueError as error:
        raise InputError(f"{error}; expected schemas.REQUEST_LOG_SCHEMA") from error
    for index, field in enumerate(logs.schema):
        if pa.types.is_floating(field.type):
            column = logs.column(index)
            logs = logs.set_column(
                index, field.name, pc.if_else(pc.is_nan(column), pa.scalar(None, field.type), column)
            )
    return logs


def windows(config: MonitorConfig, logs: pa.Table) -> tuple[pa.Table, pa.Table, dict]:
    """The baseline rows ``[start, split)``, the recent rows ``[split, until]``, the bounds and how many
    rows fell outside them. Without ``until`` the recent window ends at the newest row, or now when a
    row is dated later (a replica's clock ahead would otherwise move both windows past every other row)."""
    times = logs["created_at"].cast(pa.timestamp("us", tz="UTC"), safe=False)  # nanoseconds truncated
    now = dt.datetime.now(dt.timezone.utc)
    newest = pc.max(times).as_py()
    until = config.until or (min(newest, now) if newest else now)
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.timezone.utc)
    split = until - dt.timedelta(hours=config.recent_hours)
    start = split - dt.timedelta(hours=config.baseline_hours)
    at_least = lambda bound: pc.greater_equal(times, pa.scalar(bound, times.type))  # noqa: E731
    baseline = logs.filter(pc.and_(at_least(start), pc.invert(at_least(split))))
    recent = logs.filter(pc.and_(at_least(split), pc.less_equal(times, pa.scalar(until, times.type))))
    bounds = {"baseline_start": start.isoformat(), "recent_start": split.isoformat(), "recent_end": until.isoformat()}
    outside = {
        "before_baseline": pc.sum(pc.invert(at_least(start))).as_py() or 0,
        "after_recent": pc.sum(pc.greater(times, pa.scalar(until, times.type))).as_py() or 0,
        "no_time": times.null_count,
    }
    for reason, count in outside.items():
        if count and reason != "before_baseline":
            logger.warning("%d request log rows left out of both windows (%s)", count, reason)
    return baseline, recent, {**bounds, "rows_read": logs.num_rows, "rows_outside": outside}


def rates(rows: pa.Table) -> dict[str, tuple[int, int]]:
    """(hits, total) of fallbacks and of errors (status 5xx other than deliberate 503s; rows without a
    status are left out of the error rate)."""
    fallbacks = int(pc.sum(pc.cast(rows["fallback"], pa.int64())).as_py() or 0)
    statuses = [status for status in rows["status"].to_pylist() if status is not None]
    errors = sum(1 for status in statuses if status >= 500 and status != 503)
    return {"fallback_rate": (fallbacks, rows.num_rows), "error_rate": (errors, len(statuses))}


def drift_report(config: MonitorConfig, baseline: pa.Table, recent: pa.Table) -> dict:
    """Every drift measure, its threshold and whether it is flagged."""
    limits = config.thresholds
    measures: dict[str, dict] = {}
    routes_before, routes_after = baseline["path"].to_pylist(), recent["path"].to_pylist()
    route, route_p = categorical_psi(routes_before, routes_after), categorical_psi_p_value(routes_before, routes_after)
    measures["route_psi"] = {"value": route, "threshold": limits.route_psi, "p_value": route_p,
                             "flagged": route is not None and route > limits.route_psi and route_p < limits.alpha,
                             "baseline": category_shares(routes_before),
                             "recent": category_shares(routes_after)}  # fmt: skip
    measures["prompt_tokens_psi"] = numeric_measure(
        baseline["prompt_tokens"], recent["prompt_tokens"], limits.length_psi, config.min_requests
    )
    measures["completion_tokens_psi"] = numeric_measure(
        answer_lengths(baseline), answer_lengths(recent), limits.length_psi, config.min_requests
    )
    if recent[EMBEDDING_COLUMN].null_count < recent.num_rows:
        measures["prompt_embedding_psi"] = embedding_measure(
            baseline, recent, limits.embedding_psi, config.min_requests
        )
    if recent[RELEVANCE_COLUMN].null_count < recent.num_rows:
        measures["relevance_psi"] = numeric_measure(
            baseline[RELEVANCE_COLUMN], recent[RELEVANCE_COLUMN], limits.relevance_psi, config.min_requests
        )
    before, after = rates(baseline), rates(recent)
    for name in ("fallback_rate", "error_rate"):
        (hits_before, total_before), (hits_after, total_after) = before[name], after[name]
        rate_before = hits_before / total_before if total_before else None
        rate_after = hits_after / total_after if total_after else None
        test = two_proportion_test((hits_after, hits_before), (total_after, total_before))
        change = rate_after - rate_before if rate_before is not None and rate_after is not None else None
        significant = test["p_value"] is not None and test["p_value"] < limits.alpha  # p 0.0 is the most significant
        flagged = change is not None and abs(change) >= limits.rate_change and significant
        measures[name] = {"value": change, "baseline": rate_before, "recent": rate_after, "p_value": test["p_value"],
                          "threshold": limits.rate_change, "flagged": flagged}  # fmt: skip
    for name, measure in measures.items():
        if "flagged" not in measure:
            measure["flagged"] = measure["value"] is not None and measure["value"] > measure["threshold"]
    return measures


def answer_lengths(logs: pa.Table) -> pa.ChunkedArray:
    """Every answer's length in tokens, so that clients asking for several answers (n) do not read as longer
    answers: each answer of a request that logged them one by one, else (logs from before n was served)
    the request's completion tokens."""
    listed = pc.cast(logs[ANSWERS_COLUMN], pa.list_(pa.int64()))
    unlisted = pc.filter(logs["completion_tokens"], pc.is_null(listed))
    return pa.chunked_array([pc.list_flatten(listed), pc.cast(unlisted, pa.int64())], pa.int64())


def numeric_measure(baseline: pa.ChunkedArray, recent: pa.ChunkedArray, threshold: float, minimum: int) -> dict:
    """The PSI of a logged figure between the windows, with both means; no value (a note says why)
    while either window holds fewer than ``minimum`` of it: a few values read as drift by chance."""
    before, after = baseline.drop_null().to_pylist(), recent.drop_null().to_pylist()
    too_few = _too_few(len(before), len(after), minimum)
    return {"value": None if too_few else numeric_psi(before, after), "threshold": threshold,
            "baseline_mean": _mean(baseline), "recent_mean": _mean(recent),
            **({"note": too_few} if too_few else {})}  # fmt: skip


def _too_few(baseline_count: int, recent_count: int, minimum: int) -> str | None:
    if baseline_count >= minimum and recent_count >= minimum:
        return None
    return (
        f"too few values to compare: {baseline_count} in the baseline, {recent_count} recent (min_requests {minimum})"
    )


def _mean(column: pa.ChunkedArray) -> float | None:
    value = pc.mean(column).as_py()
    return float(value) if value is not None else None


def embedding_measure(baseline: pa.Table, recent: pa.Table, threshold: float, minimum: int) -> dict:
    """The prompt-embedding PSI; not comparable (no value, a note) when the two windows were
    projected to different sizes (the router's ``embedding_dims`` changed between them) or either
    holds fewer than ``minimum`` embeddings."""
    before, after = _embeddings(baseline), _embeddings(recent)
    if before.size and after.size and before.shape[1] != after.shape[1]:
        return {"value": None, "threshold": threshold,
                "note": f"not comparable: the baseline was logged with {before.shape[1]} dimensions, "
                        f"the recent window with {after.shape[1]} (embedding_dims changed)"}  # fmt: skip
    too_few = _too_few(len(before), len(after), minimum)
    if too_few:
        return {"value": None, "threshold": threshold, "note": too_few}
    return {"value": embedding_psi(before, after), "threshold": threshold}


def _embeddings(rows: pa.Table) -> np.ndarray:
    """The window's logged embeddings of its most common size (a config change mid-window logs two)."""
    vectors = [vector for vector in rows[EMBEDDING_COLUMN].to_pylist() if vector]
    if not vectors:
        return np.zeros((0, 0))
    size, _ = Counter(len(vector) for vector in vectors).most_common(1)[0]
    return np.asarray([vector for vector in vectors if len(vector) == size], dtype=float)


def ab_report(config: MonitorConfig, recent: pa.Table) -> dict[str, dict]:
    """Per A/B test: each arm's figures, the comparison and the verdict."""
    tests = {}
    for test_name in sorted({name for name in recent["ab_test"].to_pylist() if name}):
        rows = recent.filter(pc.equal(recent["ab_test"], test_name))
        arms, unassigned = {}, sum(1 for arm in rows["arm"].to_pylist() if not (arm and arm.strip()))  # null or blank
        if unassigned:
            logger.warning("A/B test %s: %d requests without an arm are left out of its arms", test_name, unassigned)
        for arm in sorted({arm for arm in rows["arm"].to_pylist() if arm and arm.strip()}):
            arm_rows = rows.filter(pc.equal(rows["arm"], arm))
            answered = zip(arm_rows["latency_ms"].to_pylist(), arm_rows["status"].to_pylist())
            latency = [value for value, status in answered if value is not None and status is not None and status < 400]
            arm_rates = rates(arm_rows)
            arms[arm] = {
                "requests": arm_rows.num_rows,
                "latency_ms": bootstrap_mean(latency).as_dict() if latency else None,
                "latency_p95_ms": float(np.percentile(latency, 95)) if latency else None,
                "error_rate": arm_rates["error_rate"][0] / arm_rates["error_rate"][1]
                if arm_rates["error_rate"][1]
                else None,
                "fallback_rate": arm_rates["fallback_rate"][0] / arm_rows.num_rows,
                "_latency": latency,
                "_errors": arm_rates["error_rate"],
            }
        tests[test_name] = {"arms": arms, "requests_without_arm": unassigned, **ab_verdict(config.ab, arms)}
        for arm in arms.values():
            arm.pop("_latency"), arm.pop("_errors")
    return tests


def ab_verdict(config: AbConfig, arms: dict[str, dict]) -> dict:
    """Which of two arms wins on the primary metric, or why there is no verdict yet."""
    if len(arms) != 2:
        return {"verdict": "not_comparable", "reason": f"{len(arms)} arm(s); the comparison needs exactly two"}
    (first_name, first), (second_name, second) = sorted(arms.items())
    small = [name for name, arm in arms.items() if arm["requests"] < config.min_requests_per_arm]
    if config.primary_metric == "error_rate":
        test = two_proportion_test(
            (first["_errors"][0], second["_errors"][0]), (first["_errors"][1], second["_errors"][1])
        )
        first_value, second_value = first["error_rate"], second["error_rate"]
    else:
        test = welch_test(first["_latency"], second["_latency"])
        first_value = first["latency_ms"]["mean"] if first["latency_ms"] else None
        second_value = second["latency_ms"]["mean"] if second["latency_ms"] else None
    result = {"primary_metric": config.primary_metric, "p_value": test["p_value"]}
    if small:
        return {
            **result,
            "verdict": "too_early",
            "reason": f"arms {small} have under {config.min_requests_per_arm} requests",
        }
    unanswered = [name for name, arm in sorted(arms.items()) if len(arm["_latency"]) < 2]
    if config.primary_metric == "latency_ms" and unanswered:
        error_rates = ", ".join(f"{name} {arm['error_rate']}" for name, arm in sorted(arms.items()))
        return {**result, "verdict": "not_comparable",
                "reason": f"arms {unanswered} answered under 2 requests, so their latency says nothing (error rates: "
                          f"{error_rates}; primary_metric=error_rate compares those)"}  # fmt: skip
    if test["p_value"] is None or math.isnan(test["p_value"]) or test["p_value"] >= config.alpha:
        return {**result, "verdict": "too_early", "reason": f"no significant difference (p = {test['p_value']})"}
    winner = first_name if first_value < second_value else second_name
    return {**result, "verdict": "winner", "winner": winner,
            "reason": f"{winner} has the lower {config.primary_metric} (p = {test['p_value']:.2g})"}  # fmt: skip


def prometheus_text(drift: dict, run_registry=None):
    """The drift gauges in a fresh Prometheus registry (one gauge per measure, plus a flag)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = run_registry or CollectorRegistry()
    value = Gauge("rayfleet_drift_value", "Drift measure of the recent window against the baseline", ["measure"],
                  registry=registry)  # fmt: skip
    flagged = Gauge("rayfleet_drift_flagged", "1 when the drift measure is above its threshold", ["measure"],
                    registry=registry)  # fmt: skip
    for name, measure in drift.items():
        if measure["value"] is not None:  # a measure without a value (its note says why) exports nothing
            value.labels(name).set(measure["value"])
            flagged.labels(name).set(1 if measure["flagged"] else 0)
    return registry


def render_html(report: dict) -> str:
    escape = html.escape
    drift_rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{_fmt(m['value'])}</td><td>{_fmt(m['threshold'])}</td>"
        f"<td>{'DRIFT' if m['flagged'] else 'ok'}</td></tr>"
        for name, m in report["drift"].items()
    )
    ab_rows = "".join(
        f"<tr><td>{escape(test)}</td><td>{escape(arm)}</td><td>{figures['requests']}</td>"
        f"<td>{_fmt((figures['latency_ms'] or {}).get('mean'))}</td><td>{_fmt(figures['error_rate'])}</td>"
        f"<td>{escape(result['verdict'])}: {escape(result['reason'])}</td></tr>"
        for test, result in report["ab"].items()
        for arm, figures in result["arms"].items()
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>rayfleet monitor {escape(report['run_id'])}</title></head>"
            f"<body><h1>Serving drift and A/B</h1><p>{escape(json.dumps(report['windows']))}</p>"
            f"<p>baseline {report['baseline_requests']} requests, recent {report['recent_requests']}</p>"
            f"<h2>Drift</h2><table border=1><tr><th>measure</th><th>value</th><th>threshold</th><th></th></tr>"
            f"{drift_rows}</table>"
            f"<h2>A/B</h2><table border=1><tr><th>test</th><th>arm</th><th>requests</th><th>latency ms</th>"
            f"<th>error rate</th><th>verdict</th></tr>{ab_rows}</table></body></html>")  # fmt: skip


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def finite(value):
    """``value`` with every NaN or infinite float (a test on identical samples) as None: valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def main(config: MonitorConfig) -> dict:
    from prometheus_client import generate_latest, push_to_gateway

    run_id = new_run_id()
    logger.info("monitor %s with\n%s", run_id, describe(config))
    baseline, recent, bounds = windows(config, read_logs(config))
    enough = baseline.num_rows >= config.min_requests and recent.num_rows >= config.min_requests
    drift = drift_report(config, baseline, recent) if enough else {}
    report = {
        "run_id": run_id, "windows": bounds, "baseline_requests": baseline.num_rows, "recent_requests": recent.num_rows,
        "drift": drift, "drift_flags": sorted(name for name, measure in drift.items() if measure["flagged"]),
        "drift_verdict": ("drift" if any(m["flagged"] for m in drift.values()) else "stable") if enough
        else f"too few requests (need {config.min_requests} per window)",
        "ab": ab_report(config, recent),
    }  # fmt: skip
    report = finite(report)
    folder = storage.join(config.output, run_id)
    registry = prometheus_text(drift)
    storage.write_bytes(storage.join(folder, "drift.prom"), generate_latest(registry))
    storage.write_bytes(storage.join(folder, "report.html"), render_html(report).encode())
    report["report"] = storage.join(folder, "report.json")
    storage.write_bytes(report["report"], json.dumps(report, indent=2, default=str).encode())
    if config.pushgateway:
        push_to_gateway(config.pushgateway, job="rayfleet_monitor", registry=registry)
    for name in report["drift_flags"]:
        logger.warning("drift: %s = %s above %s", name, drift[name]["value"], drift[name]["threshold"])
    return report


if __name__ == "__main__":
    print(json.dumps(run_job(__spec__, "MonitorConfig"), default=str))
