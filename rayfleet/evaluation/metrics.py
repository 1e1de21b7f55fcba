"""Reference-based answer metrics: exact match, token F1 (SQuAD style) and ROUGE-L.

Answers are normalised the SQuAD way before exact match and F1 (lower case, no
punctuation, no articles, single spaces), so "The Transformer." matches "transformer".
ROUGE-L comes from Google's ``rouge-score`` package (with stemming).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation and articles, collapse whitespace."""
    text = "".join(character for character in text.lower() if character not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are identical, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall between the normalised answers."""
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), stemmed."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def score_answer(prediction: str, reference: str) -> dict[str, float]:
    """Every reference-based metric of one answer."""
    return {
        "exact_match": exact_match(prediction, reference),
        "f1": token_f1(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
    }
