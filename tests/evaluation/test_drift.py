"""Population stability index on numbers, categories and embeddings."""

import numpy as np
import pytest

from rayfleet.evaluation.drift import (
    categorical_psi,
    categorical_psi_p_value,
    embedding_psi,
    numeric_psi,
    project_embeddings,
    psi_from_shares,
)


def test_identical_distributions_have_zero_psi_and_shifts_grow_it():
    rng = np.random.default_rng(0)
    baseline = list(rng.normal(100, 10, 5000))
    assert numeric_psi(baseline, list(rng.normal(100, 10, 5000))) < 0.02
    small, large = (
        numeric_psi(baseline, list(rng.normal(104, 10, 5000))),
        numeric_psi(baseline, list(rng.normal(120, 10, 5000))),
    )
    assert 0.02 < small < large and large > 0.25


def test_psi_by_hand():
    # shares 0.5/0.5 -> 0.8/0.2: 0.3*ln(1.6) + (-0.3)*ln(0.4) = 0.1410 + 0.2749
    assert psi_from_shares(np.array([0.5, 0.5]), np.array([0.8, 0.2])) == pytest.approx(0.4159, abs=1e-3)


def test_a_new_route_counts_as_drift():
    baseline = ["rag"] * 50 + ["base"] * 50
    assert categorical_psi(baseline, ["rag"] * 49 + ["base"] * 51) < 0.01
    assert categorical_psi(baseline, ["rag"] * 40 + ["base"] * 40 + ["finetuned"] * 20) > 0.1
    assert categorical_psi([], ["rag"]) is None


def test_embedding_psi_sees_a_moved_cluster():
    rng = np.random.default_rng(1)
    baseline = rng.normal(0, 1, (2000, 8))
    assert embedding_psi(baseline, rng.normal(0, 1, (2000, 8))) < 0.02
    assert embedding_psi(baseline, rng.normal(1, 1, (2000, 8))) > 0.25
    with pytest.raises(ValueError, match="different sizes"):
        embedding_psi(baseline, rng.normal(0, 1, (10, 4)))


def unit_rows(rng, center: np.ndarray, count: int) -> np.ndarray:
    rows = center + rng.normal(0, 1, (count, center.size))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_logged_projection_is_fixed_keeps_distances_and_shows_a_topic_shift():
    rng = np.random.default_rng(2)
    topic_a, topic_b = rng.normal(0, 1, 384), rng.normal(0, 1, 384)  # within-topic cosine ~0.5, as with sentences
    baseline, same, shifted = (
        unit_rows(rng, topic_a, 1500),
        unit_rows(rng, topic_a, 1500),
        unit_rows(rng, topic_b, 1500),
    )
    projected = project_embeddings(baseline, 16)
    assert projected.shape == (1500, 16)
    assert np.array_equal(projected, project_embeddings(baseline, 16))  # every replica projects alike
    assert np.allclose(project_embeddings(baseline[0], 16)[0], projected[0])  # one vector at a time too
    original = np.linalg.norm(baseline[:200, None] - baseline[None, 200:400], axis=2)
    kept = np.linalg.norm(projected[:200, None] - projected[None, 200:400], axis=2)
    assert 0.8 < np.median(kept / original) < 1.2
    assert embedding_psi(projected, project_embeddings(same, 16)) < 0.05
    assert embedding_psi(projected, project_embeddings(shifted, 16)) > 0.25
    with pytest.raises(ValueError, match="at least one dimension"):
        project_embeddings(baseline, 0)


def test_a_baseline_of_one_value_still_sees_a_shift_either_way():
    assert numeric_psi([10] * 100, [10] * 100) == 0.0
    assert numeric_psi([10] * 100, [11] * 100) == pytest.approx(numeric_psi([10] * 100, [9] * 100))
    assert numeric_psi([10] * 100, [11] * 100) > 1


def test_a_rare_category_in_a_small_window_is_not_significant_but_a_real_shift_is():
    baseline = ["rag"] * 1000
    one_failure = ["rag"] * 49 + [None]
    assert categorical_psi(baseline, one_failure) > 0.1  # PSI alone would call this drift
    assert categorical_psi_p_value(baseline, one_failure) > 0.01
    rng = np.random.default_rng(0)
    before = list(rng.choice(["a", "b", "c"], 1000, p=[0.5, 0.3, 0.2]))
    after = list(rng.choice(["a", "b", "c"], 200, p=[0.3, 0.3, 0.4]))
    assert categorical_psi_p_value(before, after) < 0.01
