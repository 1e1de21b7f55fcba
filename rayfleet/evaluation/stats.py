"""Uncertainty for evaluation figures: bootstrap intervals, paired differences, judge agreement, A/B tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


# Resampled indexes drawn at a time: the same draws as one (samples x n) matrix, in at most ~16 MB
# (a monitor's arm of a million requests would otherwise need ~16 GB).
BOOTSTRAP_BLOCK_ELEMENTS = 1 << 21


def bootstrap_mean(values: list[float], samples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval (items resampled with replacement)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    generator = np.random.default_rng(seed)
    rows_per_block = max(1, BOOTSTRAP_BLOCK_ELEMENTS // data.size)
    means = np.concatenate([
        data[generator.integers(0, data.size, size=(min(rows_per_block, samples - start), data.size))].mean(axis=1)
        for start in range(0, samples, rows_per_block)
    ])  # fmt: skip
    tail = (1 - confidence) / 2
    return Interval(float(data.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def cluster_bootstrap_mean(
    values: list[float], groups: list[str], samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Mean of ``values`` with a bootstrap interval that resamples whole groups: questions about
    one document are not independent, and resampling them one by one makes intervals too narrow."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    if len(groups) != data.size:
        raise ValueError(f"one group per value: {len(groups)} groups for {data.size} values")
    _, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    sums, counts = np.bincount(index, weights=data), np.bincount(index)
    draws = np.random.default_rng(seed).integers(0, sums.size, size=(samples, sums.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1 - confidence) / 2
    return Interval(float(data.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def paired_difference(
    candidate: list[float],
    baseline: list[float],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: list[str] | None = None,
) -> Interval:
    """Mean of ``candidate - baseline`` on the same items, with a paired bootstrap interval
    (resampling whole ``groups``, e.g. documents, when given)."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired scores need the same items: {len(candidate)} against {len(baseline)}")
    differences = list(np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float))
    if groups is not None:
        return cluster_bootstrap_mean(differences, groups, samples, confidence, seed)
    return bootstrap_mean(differences, samples, confidence, seed)


def rank_agreement(first: list[float | None], second: list[float | None]) -> dict[str, float | int | None]:
    """Spearman correlation of two scorings of the same items (items either left unscored are skipped)."""
    pairs = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return {"spearman": None, "p_value": None, "items": len(pairs)}
    result = stats.spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return {"spearman": float(result.statistic), "p_value": float(result.pvalue), "items": len(pairs)}


def welch_test(first: list[float], second: list[float]) -> dict[str, float | None]:
    """Welch's t-test of two independent samples' means (e.g. latency per A/B arm)."""
    if len(first) < 2 or len(second) < 2:
        return {"statistic": None, "p_value": None}
    if np.ptp(first) == 0 and np.ptp(second) == 0:  # no spread at all: the t statistic is undefined
        return {"statistic": None, "p_value": 1.0 if first[0] == second[0] else 0.0}
    result = stats.ttest_ind(first, second, equal_var=False)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def two_proportion_test(successes: tuple[int, int], totals: tuple[int, int]) -> dict[str, float | None]:
    """Two-sided z-test that two rates (e.g. error rates per arm) are equal."""
    (first_hits, second_hits), (first_total, second_total) = successes, totals
    if min(first_total, second_total) == 0:
        return {"statistic": None, "p_value": None}
    pooled = (first_hits + second_hits) / (first_total + second_total)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / first_total + 1 / second_total))
    if spread == 0:
        return {"statistic": 0.0, "p_value": 1.0}
    statistic = (first_hits / first_total - second_hits / second_total) / spread
    return {"statistic": float(statistic), "p_value": float(2 * stats.norm.sf(abs(statistic)))}
