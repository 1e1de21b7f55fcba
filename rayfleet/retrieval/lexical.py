"""BM25 lexical scoring over chunk texts, and reciprocal-rank fusion with dense scores.

On our data (ACL chunks, queries written from the papers) BM25 alone found the right
paper in the top 5 more often than MiniLM alone, and fusing both beat dense alone:
``python -m bench.hybrid_retrieval`` measures it (docs/retrieval.md).

Terms are words of two or more letters, lower-cased and without accents ("Résumé" matches
"resume"). Chinese, Japanese and Korean write no spaces between words, so a run of their
characters is read as overlapping character bigrams (as Lucene's CJK analyzer does), and a
lone character as itself; otherwise a whole sentence would be one term no query matches.
Texts with no term at all (a table of figures, stop words only) score zero for every query,
so the dense ranking alone orders them.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, strip_accents_unicode

from rayfleet.text.scripts import CJK

RRF_K = 60  # the constant of reciprocal-rank fusion (Cormack et al., 2009)
CJK_RUN = re.compile(f"[{CJK}]+")
TERM_PATTERN = f"(?u)[{CJK}]+|\\b\\w\\w+\\b"


def lexical_text(text: str) -> str:
    """``text`` lower-cased, accents stripped outside CJK, each CJK run replaced by its bigrams."""
    pieces, position = [], 0
    for run in CJK_RUN.finditer(text):
        pieces += [strip_accents_unicode(text[position : run.start()].lower()), _cjk_bigrams(run.group())]
        position = run.end()
    pieces.append(strip_accents_unicode(text[position:].lower()))
    return "".join(pieces)


def _cjk_bigrams(characters: str) -> str:
    if len(characters) == 1:
        return f" {characters} "
    return " " + " ".join(characters[i : i + 2] for i in range(len(characters) - 1)) + " "


class BM25:
    """Okapi BM25 (``k1``, ``b``) of every text for a query, English stop words removed."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75):
        self.vectorizer = CountVectorizer(preprocessor=lexical_text, token_pattern=TERM_PATTERN, stop_words="english")
        self.text_count = len(texts)
        try:
            counts = sparse.csr_matrix(self.vectorizer.fit_transform(texts), dtype=np.float64)
        except ValueError as error:  # scikit-learn's "empty vocabulary": no term anywhere (figures, stop words)
            if "empty vocabulary" not in str(error):
                raise
            self.vectorizer = None  # every score is zero
            return
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        frequency = np.bincount(counts.indices, minlength=counts.shape[1])
        idf = np.log(1 + (len(texts) - frequency + 0.5) / (frequency + 0.5))
        norms = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-9))
        weights = counts.copy()
        row_of_entry = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        weights.data = counts.data * (k1 + 1) / (counts.data + norms[row_of_entry]) * idf[counts.indices]
        self.weights = weights.tocsc()

    def scores(self, queries: list[str]) -> np.ndarray:
        """Shape ``(len(queries), len(texts))``: each text's BM25 score for each query."""
        if self.vectorizer is None:
            return np.zeros((len(queries), self.text_count))
        terms = self.vectorizer.transform(queries)
        terms.data[:] = 1.0  # a query term counts once
        return np.asarray((terms @ self.weights.T).todense())


def reciprocal_rank_fusion(*rankings: np.ndarray, k: int = RRF_K) -> dict[int, float]:
    """Fused score of each id from several best-first id lists: sum of ``1 / (k + rank)``."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            fused[int(item)] = fused.get(int(item), 0.0) + 1.0 / (k + rank + 1)
    return fused
