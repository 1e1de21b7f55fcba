"""Greedy agreement, QA F1, the quality gate, and held-out QA built from real papers or read and checked from a file."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rayfleet.engines import Generation
from rayfleet.quantization.quality import (
    PAPER_QUESTIONS,
    QaPair,
    QualityGateConfig,
    common_prefix_share,
    greedy_agreement,
    qa_f1,
    quality_verdict,
    read_qa_pairs,
)
from rayfleet.tables import write_table


def generation(text: str, token_ids: list[int]) -> Generation:
    return Generation(text, prompt_tokens=1, completion_tokens=len(token_ids), token_ids=token_ids)


def test_common_prefix_share_counts_tokens_before_the_first_difference():
    assert common_prefix_share([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert common_prefix_share([1, 2], [1, 2, 3, 4]) == 0.5
    assert common_prefix_share([], []) == 1.0


def test_greedy_agreement_and_identical_share():
    reference = [generation("a", [1, 2, 3, 4]), generation("b", [5, 6])]
    candidate = [generation("a", [1, 2, 3, 4]), generation("c", [7, 6])]
    assert greedy_agreement(reference, candidate) == {"prefix_agreement": 0.5, "identical_share": 0.5}
    with pytest.raises(ValueError):
        greedy_agreement(reference, candidate[:1])


def test_qa_f1_uses_token_f1_against_references():
    pairs = [QaPair("q1", "the cat sat"), QaPair("q2", "a dog")]
    assert qa_f1([generation("cat sat", []), generation("no", [])], pairs) == pytest.approx(0.5)


def test_heldout_pairs_from_real_papers(heldout_pairs):
    assert len(heldout_pairs) == 2 * len(PAPER_QUESTIONS)
    pair = heldout_pairs[0]
    assert pair.context.startswith("Abstract\n") and len(pair.answer.split()) > 5
    [message] = pair.conversation()
    assert pair.context in message["content"] and pair.question in message["content"]


def test_a_qa_file_with_null_or_blank_text_drops_and_counts_those_rows(tmp_path):
    uri = str(tmp_path / "qa.parquet")
    rows = {
        "question": ["What problem?", None, "  ", "What outcome?"],
        "answer": ["A hard one.", "An answer without a question.", "Blank question.", None],
        "context": [None, "c", "c", "c"],
    }
    write_table(uri, pa.table(rows))
    pairs, dropped = read_qa_pairs(uri)
    assert pairs == [QaPair("What problem?", "A hard one.", None)]
    assert dropped == {"no question": 2, "no answer": 1}


def test_a_qa_file_without_usable_rows_or_without_an_answer_column_is_refused_by_name(tmp_path):
    nothing_usable = str(tmp_path / "null-answers.parquet")
    write_table(nothing_usable, pa.table({"question": ["q1", "q2"], "answer": pa.array([None, None], pa.string())}))
    with pytest.raises(ValueError, match="null-answers.parquet has no usable row"):
        read_qa_pairs(nothing_usable)
    no_answers = str(tmp_path / "questions-only.parquet")
    write_table(no_answers, pa.table({"question": ["q1"], "context": ["c"]}))
    with pytest.raises(ValueError, match=r"questions-only.parquet lacks column\(s\) \['answer'\]"):
        read_qa_pairs(no_answers)


README_FIGURES = {"prefix_agreement": 0.1235, "f1_full": 0.1288, "f1_quantized": 0.1232}  # README, W8A8 benchmark


def test_the_default_gate_judges_the_f1_kept_and_agreement_only_when_asked():
    verdict = quality_verdict(README_FIGURES, QualityGateConfig())
    assert verdict["passed"] is True and verdict["f1_drop"] == 0.0056, "the README's W8A8 run keeps its F1"
    strict = quality_verdict(README_FIGURES, QualityGateConfig(min_prefix_agreement=0.5))
    assert strict["passed"] is False
    assert strict["failures"] == ["greedy agreement 0.123 with the full-precision model is below 0.500"]


def test_the_gate_fails_an_f1_drop_and_never_passes_nan():
    dropped = {"prefix_agreement": 0.9, "f1_full": 0.5, "f1_quantized": 0.3}
    assert quality_verdict(dropped, QualityGateConfig())["failures"] == [
        "held-out F1 falls from 0.500 to 0.300 (more than 0.05)"
    ]
    nan = {"prefix_agreement": float("nan"), "f1_full": float("nan"), "f1_quantized": 0.3}
    assert len(quality_verdict(nan, QualityGateConfig(min_prefix_agreement=0, max_f1_drop=1))["failures"]) == 2
