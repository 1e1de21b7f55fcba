"""The judge's prompt and the parsing of its grades."""

import pytest

from rayfleet.evaluation.judge import JudgeConfig, parse_verdict


def test_grades_are_read_from_the_reply_and_scaled_to_unit_range():
    verdict = parse_verdict("Relevance: 5\nCorrectness: 3")
    assert (verdict.relevance, verdict.correctness) == (5, 3)
    assert verdict.score == pytest.approx((4 + 2) / 8)
    assert parse_verdict("relevance score - 1, CORRECTNESS: 1").score == 0.0


def test_a_reply_without_both_grades_scores_none():
    assert parse_verdict("The answer looks fine.").score is None
    assert parse_verdict("Relevance: 4").score is None
    assert parse_verdict("Relevance: 9\nCorrectness: 2").score is None, "grades outside 1-5 are not grades"


def test_the_conversation_carries_rubric_question_reference_and_answer():
    messages = JudgeConfig().conversation("Who?", "Alice", "Bob")
    assert messages[0]["role"] == "system" and "Correctness (1-5)" in messages[0]["content"]
    assert messages[1]["content"] == "Question: Who?\nReference answer: Alice\nAnswer to grade: Bob"
    with pytest.raises(ValueError, match="must contain"):
        JudgeConfig(user="Question: {question}")


def test_placeholders_inside_the_question_or_reference_are_kept_as_written():
    messages = JudgeConfig().conversation("What does {answer} print in str.format?", "the {reference} field", "Bob")
    assert messages[1]["content"] == (
        "Question: What does {answer} print in str.format?\nReference answer: the {reference} field\n"
        "Answer to grade: Bob"
    )
