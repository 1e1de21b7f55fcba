"""Metrics of the ingress, per path and per A/B arm.

Every figure goes to two places:

- this replica's own registry, served on ``/metrics`` (Prometheus text format); a scrape
  through the Serve proxy reaches one ingress replica, so it shows that replica alone;
- with ``export_to_ray``, Ray's metrics (:mod:`ray.serve.metrics`): each node's metrics agent
  exports every replica's series, tagged with ``deployment``, ``replica`` and ``application``,
  on the node's metrics export port, where the cluster's Prometheus sums them across
  replicas. Names there carry Ray's ``ray_`` prefix (``ray_rayfleet_requests_total``).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
PATH_LABELS = ("path", "arm")
RECORD_METHODS = {"counter": "inc", "histogram": "observe", "gauge": "set"}  # the same in prometheus_client and Ray


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # counter | histogram | gauge
    name: str
    description: str
    labels: tuple[str, ...] = ()


SPECS = {
    "requests": MetricSpec("counter", "rayfleet_requests", "Requests answered, by status.", (*PATH_LABELS, "status")),
    "errors": MetricSpec(
        "counter", "rayfleet_path_errors", "Path failures (errors and timeouts).", (*PATH_LABELS, "reason")
    ),
    "fallbacks": MetricSpec(
        "counter", "rayfleet_fallbacks", "Requests answered by a fallback path.", ("from_path", "to_path")
    ),
    "rejected": MetricSpec("counter", "rayfleet_rejected", "Requests refused before model work.", ("reason",)),
    "latency": MetricSpec("histogram", "rayfleet_request_latency_seconds", "Request latency.", PATH_LABELS),
    "ttft": MetricSpec("histogram", "rayfleet_time_to_first_token_seconds", "Time to the first token.", PATH_LABELS),
    "tokens_in": MetricSpec("counter", "rayfleet_prompt_tokens", "Prompt tokens.", PATH_LABELS),
    "tokens_out": MetricSpec("counter", "rayfleet_completion_tokens", "Generated tokens.", PATH_LABELS),
    "in_flight": MetricSpec("gauge", "rayfleet_in_flight_requests", "Requests being answered by this replica."),
}


class Metric:
    """One metric in this replica's registry and, optionally, in Ray's metrics."""

    def __init__(self, spec: MetricSpec, registry: CollectorRegistry, export_to_ray: bool):
        self.spec = spec
        local_class = {"counter": Counter, "histogram": Histogram, "gauge": Gauge}[spec.kind]
        extra = {"buckets": LATENCY_BUCKETS} if spec.kind == "histogram" else {}
        self.local = local_class(spec.name, spec.description, spec.labels, registry=registry, **extra)
        self.ray = ray_metric(spec) if export_to_ray else None

    def record(self, value: float, *labels: str) -> None:
        """Add to a counter, observe into a histogram, or set a gauge."""
        local = self.local.labels(*labels) if labels else self.local
        getattr(local, RECORD_METHODS[self.spec.kind])(value)
        if self.ray is not None and not (self.spec.kind == "counter" and value <= 0):  # Ray's counters take only > 0
            getattr(self.ray, RECORD_METHODS[self.spec.kind])(value, tags=dict(zip(self.spec.labels, labels)))


def ray_metric(spec: MetricSpec):
    from ray.serve import metrics as serve_metrics

    if spec.kind == "histogram":
        return serve_metrics.Histogram(spec.name, spec.description, list(LATENCY_BUCKETS), tag_keys=spec.labels)
    metric_class = serve_metrics.Counter if spec.kind == "counter" else serve_metrics.Gauge
    return metric_class(spec.name, spec.description, tag_keys=spec.labels)


class ServeMetrics:
    """The app's counters and histograms (one set per ingress replica).

    Args:
        export_to_ray: also record into Ray's metrics (only inside a Ray worker, i.e. a Serve replica).
    """

    def __init__(self, export_to_ray: bool = False):
        self.registry = CollectorRegistry()
        self.metrics = {key: Metric(spec, self.registry, export_to_ray) for key, spec in SPECS.items()}

    def request_done(self, path: str, arm: str, status: int, latency_s: float, ttft_s: float | None,
                     prompt_tokens: int, completion_tokens: int) -> None:  # fmt: skip
        """One finished request: its count by status, latency, time to first token and tokens."""
        self.metrics["requests"].record(1, path, arm, str(status))
        self.metrics["latency"].record(latency_s, path, arm)
        if ttft_s is not None:
            self.metrics["ttft"].record(ttft_s, path, arm)
        self.metrics["tokens_in"].record(prompt_tokens, path, arm)
        self.metrics["tokens_out"].record(completion_tokens, path, arm)

    def path_error(self, path: str, arm: str, reason: str) -> None:
        self.metrics["errors"].record(1, path, arm, reason)

    def fallback(self, from_path: str, to_path: str) -> None:
        self.metrics["fallbacks"].record(1, from_path, to_path)

    def rejected(self, reason: str) -> None:
        self.metrics["rejected"].record(1, reason)

    def in_flight(self, count: int) -> None:
        self.metrics["in_flight"].record(count)

    def exposition(self) -> bytes:
        """This replica's metrics in Prometheus' text format."""
        return generate_latest(self.registry)
