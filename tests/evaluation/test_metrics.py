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


def test_english_rouge_l_is_rouge_score_s_own():
    from rouge_score import rouge_scorer

    reference = "We propose a transformer-based parser; it improves parsing accuracy by 2.3 points on WSJ."
    prediction = "The proposed parsers improve the accuracy of parsing (WSJ), running faster."
    expected = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction)["rougeL"].fmeasure
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_every_script_is_scored_not_only_latin():
    assert rouge_l("Привет, мир", "привет мир") == 1.0
    assert score_answer("東京", "東京") == {"exact_match": 1.0, "f1": 1.0, "rouge_l": 1.0}
    # Unspaced scripts count characters: [首 都 は 東 京] against [日 本 の 首 都 は 東 京 で す]:
    # overlap 5 -> P 1, R 1/2 -> F 2/3
    assert token_f1("首都は東京", "日本の首都は東京です") == pytest.approx(2 / 3)
    assert rouge_l("首都は東京", "日本の首都は東京です") == pytest.approx(2 / 3)


def test_vowel_signs_and_viramas_belong_to_their_word():
    """Indic vowel signs, viramas and Arabic vowels are combining marks, which regular expressions' \\W
    counts as non-word: "किम" (kim) and "काम" (kaam) were both the consonants [क म], ROUGE-L 1.0."""
    assert rouge_l("किम", "काम") == 0.0 and rouge_l("काम", "काम") == 1.0
    assert rouge_l("दिल्ली की सरकार", "दिल्ली सरकार") == pytest.approx(0.8)  # 2 of 3 words, 2 of 2
    assert rouge_l("நன்றி வணக்கம்", "வணக்கம்") == pytest.approx(2 / 3)  # Tamil: two words, not four
    # Thai counts characters, each with its vowels above or below: [กั น] against [ก น] is one of two
    # (the vowel as a token of its own, [ก ั น], made it F1 0.8).
    assert token_f1("กัน", "กน") == pytest.approx(0.5) and token_f1("กัน", "กัน") == 1.0


def test_unicode_punctuation_is_dropped_like_ascii_punctuation():
    assert exact_match("Tokyo。", "tokyo") == 1.0
    assert exact_match("«Paris»", "Paris") == 1.0
    assert exact_match("ＡＢＣ", "abc") == 1.0  # full-width letters (NFKC)


def test_several_references_score_against_the_best():
    scores = score_answer("Paris", ["London", "Paris, France"])
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(2 / 3)
    assert score_answer("London", ["London", "Paris, France"])["exact_match"] == 1.0
