"""VectorIndex: HNSW recall against exact search, incremental adds, round trips, dimension checks."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from rayfleet.retrieval.index import DimensionError, IndexParams, VectorIndex


def clustered_unit_vectors(count: int, dimension: int = 64, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Vectors around a few centres (like topics), normalized: harder for ANN than uniform noise."""
    generator = np.random.default_rng(seed)
    centres = generator.normal(size=(clusters, dimension))
    vectors = centres[generator.integers(clusters, size=count)] + 0.6 * generator.normal(size=(count, dimension))
    vectors = vectors.astype(np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1)[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def test_recall_at_5_against_exact_search_on_a_small_set():
    vectors = clustered_unit_vectors(3000)
    queries = clustered_unit_vectors(200, seed=1)
    index = VectorIndex.create(64, IndexParams())
    index.add(vectors)
    _, found = index.search(queries, 5)
    assert recall(found, exact_top_k(vectors, queries, 5)) >= 0.95


def test_added_vectors_get_the_next_ids_and_are_found():
    vectors = clustered_unit_vectors(500)
    index = VectorIndex.create(64, IndexParams())
    index.add(vectors[:300])
    index.add(vectors[300:])
    assert len(index) == 500
    scores, ids = index.search(vectors[[10, 400]], 1)
    assert ids[:, 0].tolist() == [10, 400]
    assert scores[:, 0] == pytest.approx([1.0, 1.0], abs=1e-5)


def test_round_trip_through_bytes_keeps_vectors_and_takes_ef_search_from_params():
    vectors = clustered_unit_vectors(200)
    index = VectorIndex.create(64, IndexParams(ef_search=32))
    index.add(vectors)
    loaded = VectorIndex.from_bytes(index.to_bytes(), IndexParams(ef_search=99))
    assert np.array_equal(loaded.vectors(), vectors)
    assert loaded.index.hnsw.efSearch == 99
    assert np.array_equal(loaded.search(vectors[:5], 3)[1], index.search(vectors[:5], 3)[1])


def test_search_among_is_exact_within_the_subset():
    vectors = clustered_unit_vectors(400)
    index = VectorIndex.create(64, IndexParams())
    index.add(vectors)
    subset = np.arange(100, 200)
    scores, ids = index.search_among(vectors[0], subset, 5)
    expected = subset[np.argsort(-(vectors[subset] @ vectors[0]))[:5]]
    assert ids.tolist() == expected.tolist()
    assert np.all(np.diff(scores) <= 0)


def test_wrong_dimension_is_a_clear_error():
    index = VectorIndex.create(64, IndexParams())
    with pytest.raises(DimensionError, match="dimension 64"):
        index.add(np.zeros((3, 32), np.float32))
    index.add(clustered_unit_vectors(10))
    with pytest.raises(DimensionError, match="different embedding model"):
        index.search(np.zeros((1, 384), np.float32), 5)
