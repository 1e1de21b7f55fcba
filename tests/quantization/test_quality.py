"""Greedy agreement, QA F1 and the held-out QA built from real papers."""

from __future__ import annotations

import pytest

from rayfleet.engines import Generation
from rayfleet.quantization.quality import PAPER_QUESTIONS, QaPair, common_prefix_share, greedy_agreement, qa_f1


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
