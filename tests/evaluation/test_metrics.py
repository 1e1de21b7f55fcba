"""Reference-based metrics against hand-computed values."""

import pytest

from rayfleet.evaluation.metrics import exact_match, normalize_answer, rouge_l, score_answer, token_f1


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalize_answer("The  Transformer, an Encoder!") == "transformer encoder"


def test_exact_match_after_normalisation():
    assert exact_match("The Transformer.", "transformer") == 1.0
    assert exact_match("a recurrent network", "transformer") == 0.0


def test_token_f1_counts_overlap_both_ways():
    # prediction: [attention, is, all, you, need] ; reference: [attention, is, key]
    # overlap 2 -> precision 2/5, recall 2/3 -> F1 = 2*0.4*0.6667/(1.0667) = 0.5
    assert token_f1("Attention is all you need", "attention is key") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0
    assert token_f1("something", "") == 0.0
    assert token_f1("cats", "dogs") == 0.0


def test_rouge_l_uses_the_longest_common_subsequence():
    # LCS of "a b c d" and "a c d" is 3 tokens: P = 3/4, R = 3/3 -> F = 6/7
    assert rouge_l("alpha beta gamma delta", "alpha gamma delta") == pytest.approx(6 / 7)
    assert rouge_l("unrelated words", "alpha gamma delta") == 0.0


def test_score_answer_reports_every_metric():
    scores = score_answer("the BLEU score", "BLEU score")
    # ROUGE-L is not normalised: "the" counts, so P = 2/3, R = 1 -> F = 0.8
    assert scores == {"exact_match": 1.0, "f1": 1.0, "rouge_l": pytest.approx(0.8)}
