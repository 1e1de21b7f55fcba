"""An approximate-nearest-neighbour index over unit vectors: FAISS HNSW, inner product.

HNSW needs no training pass, so vectors can be added at any time (ids are positions:
the i-th vector added has id i) and a rebuild is only needed when chunks change or
disappear. Its flat storage also gives exact search over any subset of ids, which is
how filtered queries (some documents, some sources) stay exact without a graph walk
through excluded nodes.
"""

from __future__ import annotations

import faiss
import numpy as np
from pydantic import Field

from rayfleet.config import BaseConfig


class IndexParams(BaseConfig):
    """HNSW parameters (recorded in the index manifest)."""

    m: int = Field(
        32, ge=4, le=128, description="HNSW graph degree: more is better recall, more memory and build time."
    )
    ef_construction: int = Field(
        80, ge=8, description="Candidate list size while inserting: build quality vs build time."
    )
    ef_search: int = Field(
        128, ge=1, description="Candidate list size per query: recall vs latency (set at load, not stored)."
    )


class DimensionError(ValueError):
    """Vectors whose dimension is not the index's."""


class VectorIndex:
    """FAISS ``IndexHNSWFlat`` over L2-normalized vectors with inner-product scores."""

    def __init__(self, index: faiss.IndexHNSWFlat, params: IndexParams):
        self.index, self.params = index, params
        self.index.hnsw.efSearch = params.ef_search

    @classmethod
    def create(cls, dimension: int, params: IndexParams) -> "VectorIndex":
        index = faiss.IndexHNSWFlat(dimension, params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        return cls(index, params)

    @classmethod
    def from_bytes(cls, data: bytes, params: IndexParams) -> "VectorIndex":
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if not isinstance(index, faiss.IndexHNSWFlat):
            raise ValueError(f"expected a FAISS IndexHNSWFlat, found {type(index).__name__}")
        return cls(index, params)

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

    @property
    def dimension(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, vectors: np.ndarray) -> None:
        """Append ``vectors``; they get ids ``len(self) .. len(self)+len(vectors)-1``."""
        self.index.add(self._checked(vectors))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` of each query: ``(scores, ids)``, id -1 where fewer exist."""
        return self.index.search(self._checked(queries), k)

    def search_among(self, query: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` of one query among ``ids`` only (filtered search)."""
        query = self._checked(query.reshape(1, -1))[0]
        scores = self.vectors()[ids] @ query
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top], ids[top]

    def vectors(self) -> np.ndarray:
        """A zero-copy view of every stored vector (valid while this index lives)."""
        if not len(self):
            return np.zeros((0, self.dimension), dtype=np.float32)
        storage = faiss.downcast_index(self.index.storage)
        return faiss.rev_swig_ptr(storage.get_xb(), len(self) * self.dimension).reshape(len(self), self.dimension)

    def _checked(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise DimensionError(
                f"vectors of shape {vectors.shape} do not fit this index of dimension {self.dimension}: "
                "they come from a different embedding model than the one the index was built with"
            )
        return vectors
