"""Index versions written the way ``jobs.build_index`` writes them, for tests that need one without the job."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rayfleet.retrieval import Embedder, IndexParams, VectorIndex, store
from rayfleet.retrieval.chunks import chunks_version, embedding_keys
from rayfleet.retrieval.store import IndexManifest


def write_index_version(
    root: str, chunks: pa.Table, embedder: Embedder, version: str = "v1", vectors: np.ndarray | None = None
) -> None:
    """``chunks`` (``CHUNK_COLUMNS``) as index version ``version`` of ``root``, ``LATEST`` pointing at it;
    ``vectors`` are their embeddings when already computed."""
    index = VectorIndex.create(embedder.dimension, IndexParams())
    index.add(embedder.embed(chunks["text"].to_pylist()) if vectors is None else vectors)
    keys = embedding_keys(chunks, embedder.fingerprint)
    manifest = IndexManifest(
        version=version, created_at="2026-01-01T00:00:00+00:00", embedding_model=embedder.model_name,
        embedding_model_hash=embedder.fingerprint, dimension=embedder.dimension, row_count=len(index),
        source="test", source_chunks_version=chunks_version(chunks, keys), index_params=IndexParams(),
        faiss_version=store.faiss_version(), build_mode="full", added_rows=len(index),
    )  # fmt: skip
    store.save_version(root, index, chunks.append_column("embedding_key", pa.array(keys)), manifest)
