"""BM25 scores and reciprocal-rank fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rayfleet.retrieval.lexical import BM25, reciprocal_rank_fusion


def test_bm25_matches_the_okapi_formula():
    texts = ["ccg parsing with supertags", "neural machine translation", "ccg supertags help ccg parsing"]
    scores = BM25(texts, k1=1.2, b=0.75).scores(["ccg translation"])[0]
    lengths = [3, 3, 5]  # "with" is an English stop word, not counted
    average = sum(lengths) / 3

    def term(count: int, length: int, documents_with_term: int) -> float:
        idf = math.log(1 + (3 - documents_with_term + 0.5) / (documents_with_term + 0.5))
        return idf * count * 2.2 / (count + 1.2 * (0.25 + 0.75 * length / average))

    assert scores == pytest.approx([term(1, lengths[0], 2), term(1, lengths[1], 1), term(2, lengths[2], 2)])


def test_a_query_with_no_known_term_scores_zero():
    assert not np.any(BM25(["alpha beta", "gamma"]).scores(["delta"]))


def test_accents_do_not_matter_outside_cjk():
    scores = BM25(["the résumé of the café", "a plain report"]).scores(["Resume CAFE"])[0]
    assert scores[0] > 0 and scores[1] == 0


@pytest.mark.parametrize(
    "question, expected",
    [("都庁は何時に開きますか", 0), ("大阪城の料金", 1), ("시청 휴무", 2), ("猫", 3)],
)
def test_cjk_text_without_spaces_is_matched_by_character_bigrams(question, expected):
    texts = ["東京都庁の営業時間は午前9時から午後5時です。", "大阪城の入場料は600円です。",
             "서울 시청은 월요일에 휴무입니다.", "猫"]  # fmt: skip
    scores = BM25(texts).scores([question])[0]
    assert scores.argmax() == expected and scores[expected] > 0
    assert np.count_nonzero(scores) == 1, "no other text shares a bigram"


def test_rrf_rewards_agreement():
    fused = reciprocal_rank_fusion(np.array([3, 1, 2]), np.array([1, 3, 7]))
    assert fused[1] == fused[3] > fused[2] > fused[7] - 1e-9
    assert fused[7] == pytest.approx(1 / 63)


@pytest.mark.parametrize("texts", [["| 1 | 2 | 3 |", "| 4 | 5 |"], ["It is a."], []])
def test_texts_without_any_term_score_zero_instead_of_failing(texts):
    scores = BM25(texts).scores(["pump 1", "it"])
    assert scores.shape == (2, len(texts)) and not np.any(scores)
