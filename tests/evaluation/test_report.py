"""The evaluation's HTML report: figures and decisions written as sentences, not Python printouts."""

from __future__ import annotations

import re

from rayfleet.evaluation.report import render_report


def interval(mean: float) -> dict:
    return {"mean": mean, "low": mean - 0.01, "high": mean + 0.01}


def result_with(agreement: dict, promotion: list[dict]) -> dict:
    metrics = {"exact_match": interval(0.0), "f1": interval(0.2), "rouge_l": interval(0.18), "judge": None}
    return {"run_id": "r1", "items": 1, "qa": "qa/", "split": "test", "judge_agreement": agreement,
            "promotion": promotion, "candidates": ["base", "tuned"],
            "intervals": {"base": metrics, "tuned": {**metrics, "f1": interval(0.3)}}}  # fmt: skip


ITEMS = [{"doc_id": "d1", "question": "What <b>?", "reference": "this", "answers": {"base": "that", "tuned": "this"},
          "scores": {"base": {"f1": 0.0}, "tuned": {"f1": 1.0}}}]  # fmt: skip


def test_the_judge_agreement_and_the_gate_read_as_sentences():
    decision = {"candidate": "qa@2", "promote": True, "incumbent": "base", "reason": "f1 gain +0.1000 passes"}
    page = render_report(result_with({"spearman": 0.4123, "p_value": 0.0012, "items": 40, "unparsed_judge_replies": 2},
                                     [decision]), ITEMS)  # fmt: skip
    assert "ρ = +0.41 (p = 0.0012, 40 answers); 2 judge replies unparsed" in page
    assert "<b>qa@2</b>: promoted over base: f1 gain +0.1000 passes" in page
    assert "What &lt;b&gt;?" in page
    without_judge = render_report(result_with({"spearman": None, "p_value": None, "items": 0,
                                               "unparsed_judge_replies": None},
                                              []), ITEMS)  # fmt: skip
    assert "not measured: the judge did not run" in without_judge and "No adapter version was gated" in without_judge
    for text in (page, without_judge):
        assert not re.search(r"\{'|\bNone\b|'promote'", text), "a Python printout in the page"


def test_a_metric_no_candidate_has_is_no_bar_at_zero():
    """The judge turned off, or none of its replies parsed: its bars would read as a measured 0."""
    from rayfleet.evaluation.report import charted_metrics, metric_bars_png

    summary = result_with({}, [])["intervals"]
    assert charted_metrics(summary) == ["exact_match", "f1", "rouge_l"], "exact match 0.0 is measured"
    summary["tuned"]["judge"] = {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
    assert "judge" not in charted_metrics(summary)
    summary["base"]["judge"] = interval(0.4)
    assert charted_metrics(summary)[-1] == "judge"
    assert metric_bars_png(summary).startswith(b"\x89PNG"), "one candidate without it is drawn as n/a"
