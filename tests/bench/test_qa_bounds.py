"""The Q&A reference points: the best constant answer and the sentence figures on real aclsum papers."""

from __future__ import annotations

import pytest

from bench.qa_bounds import QaBoundsConfig, best_constant, main
from rayfleet.evaluation.metrics import token_f1


def test_best_constant_is_the_candidate_with_the_highest_mean_f1_over_all_references():
    references = ["the model improves accuracy", "the model improves recall", "a new parser"]
    candidates = ["a parser", "the model improves results", "nothing alike here"]

    answer, f1 = best_constant(candidates, references)

    assert answer == "the model improves results"
    assert f1 == pytest.approx(sum(token_f1(answer, r) for r in references) / 3)
    assert all(f1 >= sum(token_f1(c, r) for r in references) / 3 for c in candidates)


def test_best_constant_with_leads_scores_each_references_lead_followed_by_the_candidate():
    references = ["a parser for tweets is fast", "a parser for code is slow"]
    leads = ["tweets", "code"]
    candidates = ["a parser is fast", "nothing alike"]

    answer, f1 = best_constant(candidates, references, leads)

    assert answer == "a parser is fast"
    expected = (
        token_f1("tweets a parser is fast", references[0]) + token_f1("code a parser is fast", references[1])
    ) / 2
    assert f1 == pytest.approx(expected)
    assert f1 > best_constant(candidates, references)[1], "each lead adds words of its own reference"


def test_on_real_papers_the_best_sentence_beats_the_lead_sentence_and_every_figure_is_a_mean_f1(capsys):
    result = main(QaBoundsConfig(test_papers=3, train_papers=5))

    assert result["questions"] == 9
    for name in ("best_constant", "title_constant", "lead_sentence", "oracle_sentence"):
        assert 0 < result[f"{name}_f1"] < 1
        assert set(result[f"{name}_f1_by_aspect"]) == {"challenge", "approach", "outcome"}
    assert result["oracle_sentence_f1"] >= result["lead_sentence_f1"], "the lead sentence is one of the candidates"
    assert result["title_constant_f1"] != result["best_constant_f1"], "the titles change the answers"
    assert capsys.readouterr().out.count("\n") == 1, "one JSON line"
