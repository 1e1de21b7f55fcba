"""The benchmarks' shared percentiles: missing values skipped, nothing measured gives None, keys by prefix."""

from __future__ import annotations

from bench.stats import p50_p99, percentile


def test_percentiles_skip_missing_values_and_round():
    assert percentile([30.0, None, 10.0, 20.0], 50) == 20.0
    assert percentile([1.0, 2.0], 50, digits=0) == 2.0, "1.5 rounds to the even 2"
    assert percentile([1.23456, 1.23456], 99, digits=3) == 1.235


def test_nothing_measured_is_none_not_zero():
    assert percentile([], 50) is None and percentile([None, None], 99) is None
    assert p50_p99([], "spike_") == {"spike_p50_ms": None, "spike_p99_ms": None}


def test_p50_and_p99_are_named_by_prefix():
    figures = p50_p99(range(1, 101), "hop_")
    assert figures == {"hop_p50_ms": 50.5, "hop_p99_ms": 99.01}
