"""The promotion gate's decision."""

import pytest

from rayfleet.evaluation.gate import PromotionGateConfig, decide

GATE = PromotionGateConfig(min_improvement=0.02, guard_tolerance=0.01, require_significant_gain=False)
SIGNIFICANT = PromotionGateConfig(min_improvement=0.02, guard_tolerance=0.01)


def test_a_clear_gain_without_guard_regression_is_promoted():
    decision = decide({"f1": 0.40, "rouge_l": 0.35}, {"f1": 0.30, "rouge_l": 0.345}, "base", GATE)
    assert decision["promote"] is True
    assert decision["candidate_primary"] == 0.40 and decision["incumbent"] == "base"


def test_a_worse_or_barely_better_candidate_is_refused_with_the_numbers():
    worse = decide({"f1": 0.20, "rouge_l": 0.30}, {"f1": 0.30, "rouge_l": 0.30}, "base", GATE)
    assert worse["promote"] is False and "f1 gain -0.1000" in worse["reason"]
    barely = decide({"f1": 0.31, "rouge_l": 0.30}, {"f1": 0.30, "rouge_l": 0.30}, "base", GATE)
    assert barely["promote"] is False


def test_the_margin_is_the_least_gain_so_without_one_a_tie_passes_and_a_loss_does_not():
    none = PromotionGateConfig(min_improvement=0, require_significant_gain=False)
    assert decide({"f1": 0.3, "rouge_l": 0.3}, {"f1": 0.3, "rouge_l": 0.3}, "base", none)["promote"] is True
    loss = decide({"f1": 0.299, "rouge_l": 0.3}, {"f1": 0.3, "rouge_l": 0.3}, "base", none)
    assert loss["promote"] is False and "f1 gain -0.0010 is below the required +0.0000" in loss["reason"]


def test_a_guard_regression_blocks_even_a_primary_gain():
    decision = decide({"f1": 0.50, "rouge_l": 0.20}, {"f1": 0.30, "rouge_l": 0.30}, "rayfleet-qa@1", GATE)
    assert decision["promote"] is False and "rouge_l fell by 0.1000" in decision["reason"]


def test_a_missing_metric_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="needs 'judge'"):
        decide({"f1": 0.5, "judge": None}, {"f1": 0.3, "judge": 0.2}, "base", PromotionGateConfig(guard_metric="judge"))


def test_a_gain_whose_interval_reaches_zero_is_refused_as_noise():
    scores = ({"f1": 0.40, "rouge_l": 0.35}, {"f1": 0.30, "rouge_l": 0.35}, "base")
    assert decide(*scores, SIGNIFICANT, {"low": 0.03, "high": 0.17})["promote"] is True
    noisy = decide(*scores, SIGNIFICANT, {"low": -0.01, "high": 0.21})
    assert noisy["promote"] is False and "within noise" in noisy["reason"]
    with pytest.raises(ValueError, match="interval"):
        decide(*scores, SIGNIFICANT)


def test_a_gain_measured_on_one_document_is_refused_whatever_its_interval():
    scores = ({"f1": 0.40, "rouge_l": 0.35}, {"f1": 0.30, "rouge_l": 0.35}, "base")
    one = decide(*scores, SIGNIFICANT, {"low": 0.1, "high": 0.1, "documents": 1})
    assert one["promote"] is False and "1 document(s)" in one["reason"]
    assert decide(*scores, SIGNIFICANT, {"low": 0.03, "high": 0.17, "documents": 2})["promote"] is True


def test_a_not_a_number_score_never_passes():
    with pytest.raises(ValueError, match="needs 'f1'"):
        decide({"f1": float("nan"), "rouge_l": 0.5}, {"f1": 0.3, "rouge_l": 0.3}, "base", GATE)


def test_a_gain_exactly_at_the_margin_passes_despite_rounding():
    assert 0.35 - 0.33 < 0.02  # binary floating point
    assert decide({"f1": 0.35, "rouge_l": 0.3}, {"f1": 0.33, "rouge_l": 0.3}, "base", GATE)["promote"] is True
