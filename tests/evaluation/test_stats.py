"""Bootstrap intervals, paired differences, agreement and the A/B significance tests."""

import pytest

from rayfleet.evaluation.stats import bootstrap_mean, paired_difference, rank_agreement, two_proportion_test, welch_test


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    small = bootstrap_mean([0.0, 1.0] * 10)
    large = bootstrap_mean([0.0, 1.0] * 500)
    assert small.low < 0.5 < small.high and large.low < 0.5 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 3
    assert bootstrap_mean([0.7, 0.7, 0.7]).as_dict() == {"mean": pytest.approx(0.7), "low": pytest.approx(0.7), "high": pytest.approx(0.7)}


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
