"""Prometheus metrics of the ingress, per path and per A/B arm, served on ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class ServeMetrics:
    """The app's counters and histograms, in their own registry (one per ingress replica)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ["path", "arm"]
        self.requests = Counter("rayfleet_requests", "Requests answered, by status.", [*labels, "status"], registry=self.registry)
        self.errors = Counter("rayfleet_path_errors", "Path failures (errors and timeouts).", [*labels, "reason"], registry=self.registry)
        self.fallbacks = Counter("rayfleet_fallbacks", "Requests answered by a fallback path.", ["from_path", "to_path"], registry=self.registry)
        self.rejected = Counter("rayfleet_rejected", "Requests refused before model work.", ["reason"], registry=self.registry)
        self.latency = Histogram("rayfleet_request_latency_seconds", "Request latency.", labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("rayfleet_time_to_first_token_seconds", "Time to the first token.", labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens_in = Counter("rayfleet_prompt_tokens", "Prompt tokens.", labels, registry=self.registry)
        self.tokens_out = Counter("rayfleet_completion_tokens", "Generated tokens.", labels, registry=self.registry)
        self.in_flight = Gauge("rayfleet_in_flight_requests", "Requests being answered.", registry=self.registry)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
