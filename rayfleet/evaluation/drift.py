"""Drift measures between a baseline window and a recent window of serving traffic.

Population stability index (PSI) compares two distributions over the same bins:
``sum((recent - baseline) * ln(recent / baseline))``. The usual reading: below 0.1 stable,
0.1-0.25 a moderate shift, above 0.25 a major one. Numeric values are binned at the
baseline's quantiles, a value the baseline holds many times (a point mass) in a bin of its
own; categories (routes) are their own bins; embeddings are compared dimension by
dimension (on a projection) and the mean PSI reported. PSI alone reads noise as drift in
small windows with rare categories, so :func:`categorical_psi_p_value` says how often two
samples of the same distribution would differ as much.

Serving logs a prompt's embedding only as :func:`project_embeddings` of it: a fixed,
seeded Gaussian random projection to a few dimensions. It keeps the distribution's shape
(distances are roughly preserved, Johnson-Lindenstrauss) for drift measures, while a
handful of numbers cannot be read back into the prompt.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np

EPSILON = 1e-4  # share given to an empty bin, so an unseen category counts as a shift, not infinity
MIN_PER_BIN = 25  # fewer items per bin and sampling noise alone reads as drift
PROJECTION_SEED = 20261129  # every replica and every monitor run must project the same way


def psi_from_shares(baseline: np.ndarray, recent: np.ndarray) -> float:
    """PSI of two share vectors over the same bins."""
    baseline = np.clip(np.asarray(baseline, dtype=float), EPSILON, None)
    recent = np.clip(np.asarray(recent, dtype=float), EPSILON, None)
    baseline, recent = baseline / baseline.sum(), recent / recent.sum()
    return float(np.sum((recent - baseline) * np.log(recent / baseline)))


def numeric_psi(baseline: list[float], recent: list[float], bins: int = 10) -> float | None:
    """PSI of two samples of a number, binned at the baseline's quantiles (None without data).

    Small samples get fewer bins (at least ``MIN_PER_BIN`` items each), so noise does not
    read as drift.
    """
    baseline_values = np.asarray([value for value in baseline if value is not None], dtype=float)
    recent_values = np.asarray([value for value in recent if value is not None], dtype=float)
    if baseline_values.size == 0 or recent_values.size == 0:
        return None
    bins = max(2, min(bins, min(baseline_values.size, recent_values.size) // MIN_PER_BIN))
    edges = np.unique(np.quantile(baseline_values, np.linspace(0, 1, bins + 1)[1:-1]))
    baseline_counts = np.bincount(_bin_index(edges, baseline_values), minlength=2 * edges.size + 1)
    recent_counts = np.bincount(_bin_index(edges, recent_values), minlength=2 * edges.size + 1)
    return psi_from_shares(baseline_counts / baseline_counts.sum(), recent_counts / recent_counts.sum())


def _bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bins below, at and between the edges: 0 is ``< edges[0]``, 1 is ``== edges[0]``, 2 is
    between ``edges[0]`` and ``edges[1]``, ... A baseline that is all one value then still sees
    a recent window above it (one shared upper bin would have hidden it)."""
    return np.searchsorted(edges, values, side="left") + np.searchsorted(edges, values, side="right")


def category_shares(values: list[str | None]) -> dict[str, float]:
    """Share of each category (None counts as "none")."""
    counts = Counter(value if value is not None else "none" for value in values)
    total = sum(counts.values())
    return {name: count / total for name, count in sorted(counts.items())} if total else {}


def categorical_psi(baseline: list[str | None], recent: list[str | None]) -> float | None:
    """PSI over the union of categories seen in either window."""
    before, after = category_shares(baseline), category_shares(recent)
    if not before or not after:
        return None
    names = sorted(set(before) | set(after))
    return psi_from_shares(np.array([before.get(n, 0.0) for n in names]), np.array([after.get(n, 0.0) for n in names]))


def categorical_psi_p_value(
    baseline: list[str | None], recent: list[str | None], samples: int = 1000, seed: int = 0
) -> float | None:
    """How often two samples of these sizes from one distribution (both windows pooled) have a
    PSI at least as large as the observed one: a parametric bootstrap of PSI under no drift."""
    observed = categorical_psi(baseline, recent)
    if observed is None:
        return None
    shares = np.array(list(category_shares(list(baseline) + list(recent)).values()))
    rng = np.random.default_rng(seed)
    before = rng.multinomial(len(baseline), shares, size=samples)
    after = rng.multinomial(len(recent), shares, size=samples)
    null = [psi_from_shares(b / b.sum(), a / a.sum()) for b, a in zip(before, after)]
    return float((1 + sum(value >= observed - 1e-12 for value in null)) / (1 + samples))


def embedding_psi(baseline: np.ndarray, recent: np.ndarray, bins: int = 10) -> float | None:
    """Mean over dimensions of the per-dimension PSI of two sets of (projected) embeddings."""
    if baseline.size == 0 or recent.size == 0:
        return None
    if baseline.shape[1] != recent.shape[1]:
        raise ValueError(f"embeddings of different sizes: {baseline.shape[1]} against {recent.shape[1]}")
    values = [numeric_psi(list(baseline[:, d]), list(recent[:, d]), bins) for d in range(baseline.shape[1])]
    return float(np.mean([value for value in values if value is not None]))


def project_embeddings(vectors: np.ndarray, dims: int, seed: int = PROJECTION_SEED) -> np.ndarray:
    """``vectors`` (n, d) projected to (n, dims) by a fixed random Gaussian matrix (the same for every caller)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if dims < 1:
        raise ValueError(f"a projection needs at least one dimension, not {dims}")
    return vectors @ projection_matrix(vectors.shape[1], dims, seed)


@functools.lru_cache(maxsize=8)
def projection_matrix(input_dims: int, dims: int, seed: int) -> np.ndarray:
    """The (input_dims, dims) projection, drawn once per process (the router projects every request)."""
    matrix = np.random.default_rng(seed).standard_normal((input_dims, dims)) / np.sqrt(dims)
    matrix.setflags(write=False)
    return matrix
