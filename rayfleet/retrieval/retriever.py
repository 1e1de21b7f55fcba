"""Top-k retrieval over an index version in storage, with chunk text, page and score.

retriever = Retriever.load("s3://bucket/index")
for hit in retriever.search("Which corpus do they evaluate on?", k=5, doc_ids=["acl-123"]):
    print(hit.score, hit.doc_id, hit.page_start, hit.text[:80])

``distinct=True`` (the RAG path) leaves out a hit whose text repeats a better one's, so the same
passage indexed twice (``manual.pdf`` and ``manual (copy).pdf``) takes one of the ``k`` places.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayfleet.retrieval import store
from rayfleet.retrieval.embedder import Embedder
from rayfleet.retrieval.index import VectorIndex
from rayfleet.retrieval.lexical import BM25, reciprocal_rank_fusion
from rayfleet.retrieval.store import IndexManifest

HYBRID_CANDIDATES = 50  # each ranking's top this many enter the fusion
DISTINCT_EXTRA = 5  # a distinct search first fetches this many more than k, then twice as many while repeats fill them


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; ``score`` is the cosine similarity to the query."""

    chunk_id: str
    doc_id: str
    text: str
    score: float
    page_start: int | None
    page_end: int | None
    heading: str | None
    source: str | None
    title: str | None = None


class Retriever:
    """Answers top-k queries from one loaded index version."""

    def __init__(self, index: VectorIndex, rows: pa.Table, manifest: IndexManifest, embedder: Embedder | None = None):
        self.index, self.rows, self.manifest = index, rows, manifest
        self._embedder = embedder
        if embedder is not None:
            self._check_embedder(embedder)

    @classmethod
    def load(
        cls, root: str, version: str | None = None, embedder: Embedder | None = None, ef_search: int | None = None
    ) -> "Retriever":
        """Load ``version`` (default: the latest) of the index at ``root``.

        Args:
            embedder: the query embedder; default: the manifest's model, loaded on first text query.
            ef_search: override the manifest's HNSW ``ef_search`` (recall vs latency).
        """
        index, rows, manifest = store.load_version(root, version)
        if ef_search is not None:
            index.index.hnsw.efSearch = ef_search
        return cls(index, rows, manifest, embedder)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.manifest.embedding_model)
            self._check_embedder(self._embedder)
        return self._embedder

    @cached_property
    def lexical(self) -> BM25:
        """BM25 over the chunk texts, built on the first hybrid query."""
        return BM25(self.rows["text"].to_pylist())

    def search(
        self,
        query: str,
        k: int = 5,
        doc_ids: list[str] | None = None,
        sources: list[str] | None = None,
        hybrid: bool = False,
        distinct: bool = False,
    ) -> list[Hit]:
        """The ``k`` chunks most relevant to ``query``, best first.

        Args:
            doc_ids: only chunks of these documents.
            sources: only chunks whose ``source`` is one of these.
            hybrid: order by the dense and BM25 rankings fused; hits' scores stay cosine similarities.
            distinct: leave out hits whose text (case, spacing and Unicode form aside) repeats a better hit's,
                fetching more so that ``k`` distinct passages come back when the index has them.

        A query that is empty or only white space asks for nothing: no hits.

        Raises:
            ValueError: ``k`` below 1.
        """
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if not query.strip():
            return []
        vector = self.embedder.embed([query])[0]
        if not distinct:
            return self._ranked(query, vector, k, doc_ids, sources, hybrid)
        fetch = k + DISTINCT_EXTRA
        while True:
            hits = self._ranked(query, vector, fetch, doc_ids, sources, hybrid)
            unique = distinct_hits(hits)
            if len(unique) >= k or len(hits) < fetch:  # enough, or nothing more to fetch
                return unique[:k]
            fetch *= 2

    def _ranked(self, query: str, vector: np.ndarray, k: int, doc_ids, sources, hybrid: bool) -> list[Hit]:
        if not hybrid:
            return self.search_vector(vector, k, doc_ids, sources)
        return self._hybrid_search(query, vector, k, doc_ids, sources)

    def search_vector(
        self, vector: np.ndarray, k: int = 5, doc_ids: list[str] | None = None, sources: list[str] | None = None
    ) -> list[Hit]:
        """:meth:`search` for an already embedded query."""
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if doc_ids is None and sources is None:
            scores, ids = self.index.search(np.asarray(vector).reshape(1, -1), k)
            scores, ids = scores[0], ids[0]
        else:
            scores, ids = self.index.search_among(np.asarray(vector), self._filtered_ids(doc_ids, sources), k)
        return [self._hit(int(i), float(s)) for s, i in zip(scores, ids) if i >= 0]

    def _hybrid_search(self, query: str, vector: np.ndarray, k: int, doc_ids, sources) -> list[Hit]:
        pool = max(HYBRID_CANDIDATES, k)
        lexical_scores = self.lexical.scores([query])[0]
        if doc_ids is None and sources is None:
            dense = self.index.search(vector.reshape(1, -1), pool)[1][0]
            allowed = np.arange(self.rows.num_rows)
        else:
            allowed = self._filtered_ids(doc_ids, sources)
            dense = self.index.search_among(vector, allowed, pool)[1]
        lexical = allowed[np.argsort(-lexical_scores[allowed], kind="stable")[:pool]]
        fused = reciprocal_rank_fusion(dense[dense >= 0], lexical[lexical_scores[lexical] > 0])
        best = sorted(fused, key=fused.get, reverse=True)[:k]
        cosine = self.index.vectors()[best] @ vector if best else []
        return [self._hit(row, float(score)) for row, score in zip(best, cosine)]

    def _filtered_ids(self, doc_ids: list[str] | None, sources: list[str] | None) -> np.ndarray:
        mask = pa.array(np.ones(self.rows.num_rows, dtype=bool))
        if doc_ids is not None:
            mask = pc.and_(mask, pc.is_in(self.rows["doc_id"], pa.array(doc_ids, pa.string())))
        if sources is not None:
            mask = pc.and_(mask, pc.fill_null(pc.is_in(self.rows["source"], pa.array(sources, pa.string())), False))
        return np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False)))

    def _hit(self, row: int, score: float) -> Hit:
        values = {
            name: self.rows[name][row].as_py()
            for name in ("chunk_id", "doc_id", "text", "page_start", "page_end", "heading", "source", "title")
        }
        return Hit(score=score, **values)

    def _check_embedder(self, embedder: Embedder) -> None:
        if embedder.dimension != self.manifest.dimension:
            raise ValueError(
                f"embedder {embedder.model_name} gives dimension {embedder.dimension}, but the index was built with "
                f"{self.manifest.embedding_model} (dimension {self.manifest.dimension}): query with the index's model"
            )


def normalized_text(text: str) -> str:
    """``text`` as compared for repeats: Unicode NFKC, case-folded, runs of white space as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def distinct_hits(hits: list[Hit]) -> list[Hit]:
    """``hits`` without those whose :func:`normalized_text` repeats an earlier hit's (the first, better, one stays)."""
    seen: set[str] = set()
    kept = []
    for hit in hits:
        key = normalized_text(hit.text)
        if key not in seen:
            seen.add(key)
            kept.append(hit)
    return kept
