"""Reference-based answer metrics: exact match, token F1 (SQuAD style) and ROUGE-L, in any script.

Answers are normalised the SQuAD way before exact match and F1 (lower case, no
punctuation, no articles, single spaces), so "The Transformer." matches "transformer".
Punctuation is any Unicode punctuation ("。", "«»" too), and scripts written without spaces
between words (Chinese, Japanese, Thai, ...) count each character (with its combining marks) as a
token, as the multilingual QA benchmarks (MLQA, XQuAD) score them. ROUGE-L is Google's ``rouge-score``
(Porter-stemmed English words) on the same Unicode-aware tokens: its own tokenizer keeps
only ``[a-z0-9]``, so any other script scored 0 even against itself.

A question may have several acceptable answers: each metric takes the best one, as SQuAD does.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
# Scripts written without spaces between words: Han, kana, Thai, Lao, Khmer, Myanmar (one token per character).
UNSPACED = re.compile(
    "([\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f])"
)


def _is_mark(character: str) -> bool:
    """A combining mark (Unicode M*): a vowel sign or virama of an Indic script, an Arabic vowel, Thai's vowels
    above and below. It is part of the letter before it, never a token or a word break of its own."""
    return unicodedata.category(character).startswith("M")


def _words_only(text: str) -> str:
    """Every character but letters, digits and marks as a space (rouge-score's ``[^a-z0-9]`` in any script:
    Python's ``\\W`` counts marks as non-word, which cut "काम" to "क म")."""
    return "".join(character if unicodedata.category(character)[0] in "LNM" else " " for character in text)


def _tokens(text: str) -> list[str]:
    """Space-separated words, and in scripts without spaces one token per character with its marks."""
    tokens: list[str] = []
    for token in UNSPACED.sub(r" \1 ", text).split():
        if tokens and all(map(_is_mark, token)):
            tokens[-1] += token
        else:
            tokens.append(token)
    return tokens


def _is_punctuation(character: str) -> bool:
    return character in string.punctuation or unicodedata.category(character).startswith("P")


def normalize_answer(text: str) -> str:
    """Unicode-normalised (NFKC), lower case, without punctuation or English articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(character for character in text if not _is_punctuation(character))
    return " ".join(ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """The normalised answer's tokens: words, and single characters of unspaced scripts."""
    return _tokens(normalize_answer(text))


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are identical, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall between the normalised answers."""
    predicted, expected = answer_tokens(prediction), answer_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


class RougeTokenizer:
    """rouge-score's tokenizer (lower case, non-word characters to spaces, Porter stems of
    English words over 3 letters) extended to every script: identical on ASCII text."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self.stemmer = porter.PorterStemmer("ORIGINAL_ALGORITHM")

    def tokenize(self, text: str) -> list[str]:
        tokens = _tokens(_words_only(unicodedata.normalize("NFKC", text).lower()))
        return [self.stemmer.stem(token) if token.isascii() and len(token) > 3 else token for token in tokens]


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), stemmed."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def score_answer(prediction: str, references: str | list[str]) -> dict[str, float]:
    """Every reference-based metric of one answer, each against its best reference."""
    references = [references] if isinstance(references, str) else references
    return {
        "exact_match": max(exact_match(prediction, reference) for reference in references),
        "f1": max(token_f1(prediction, reference) for reference in references),
        "rouge_l": max(rouge_l(prediction, reference) for reference in references),
    }
