"""Figures the benchmarks share: latency percentiles, rounded for their JSON lines."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def percentile(values: Iterable[float | None], q: float, digits: int = 2) -> float | None:
    """The ``q``-th percentile of the values that are not None, rounded; None when there are none."""
    present = [value for value in values if value is not None]
    return round(float(np.percentile(present, q)), digits) if present else None


def p50_p99(milliseconds: Iterable[float | None], prefix: str = "", digits: int = 2) -> dict[str, float | None]:
    """``{prefix}p50_ms`` and ``{prefix}p99_ms`` of a list of latencies."""
    values = list(milliseconds)
    return {f"{prefix}p50_ms": percentile(values, 50, digits), f"{prefix}p99_ms": percentile(values, 99, digits)}
