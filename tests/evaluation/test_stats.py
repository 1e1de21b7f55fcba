"""Bootstrap intervals, paired differences, agreement and the A/B significance tests."""

import pytest

from rayfleet.evaluation.stats import bootstrap_mean, paired_difference, rank_agreement, two_proportion_test, welch_test


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    small = bootstrap_mean([0.0, 1.0] * 10)
    large = bootstrap_mean([0.0, 1.0] * 500)
    assert small.low < 0.5 < small.high and large.low < 0.5 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 3
    assert bootstrap_mean([0.7, 0.7, 0.7]).as_dict() == {
        "mean": pytest.approx(0.7),
        "low": pytest.approx(0.7),
        "high": pytest.approx(0.7),
    }


def test_paired_difference_needs_the_same_items():
    assert paired_difference([1.0, 0.5], [0.5, 0.0]).mean == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1.0], [0.5, 0.0])


def test_rank_agreement_skips_unscored_items():
    agreement = rank_agreement([0.1, 0.5, None, 0.9, 0.3], [0.0, 0.4, 0.2, 1.0, 0.1])
    assert agreement["items"] == 4 and agreement["spearman"] == pytest.approx(1.0)
    assert rank_agreement([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["spearman"] is None


def test_significance_tests_tell_different_from_equal():
    assert two_proportion_test((50, 10), (100, 100))["p_value"] < 0.001
    assert two_proportion_test((10, 10), (100, 100))["p_value"] == pytest.approx(1.0)
    assert welch_test([1.0, 1.1, 0.9, 1.0] * 5, [2.0, 2.1, 1.9, 2.0] * 5)["p_value"] < 0.001
    assert welch_test([1.0], [2.0])["p_value"] is None


def test_bootstrap_in_blocks_draws_exactly_what_one_resample_matrix_draws(monkeypatch):
    import numpy as np

    from rayfleet.evaluation import stats

    values = np.random.default_rng(3).random(30).tolist()
    draws = np.random.default_rng(0).integers(0, 30, size=(1000, 30))
    means = np.asarray(values)[draws].mean(axis=1)
    monkeypatch.setattr(stats, "BOOTSTRAP_BLOCK_ELEMENTS", 100)  # 3 resamples a block, the last block short

    interval = stats.bootstrap_mean(values)

    assert (interval.low, interval.high) == (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def test_bootstrap_of_many_values_stays_within_a_small_memory_bound():
    """A monitor's arm of 200,000 requests: one (1000 x n) index matrix would take 1.6 GB."""
    import tracemalloc

    import numpy as np

    values = np.random.default_rng(4).random(200_000)
    tracemalloc.start()
    interval = bootstrap_mean(values.tolist())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert interval.low < values.mean() < interval.high
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"
