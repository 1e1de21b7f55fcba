"""Index versions written the way ``jobs.build_index`` writes them, for tests that need one without the job."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rayfleet.retrieval import Embedder, store


def write_index_version(
    root: str, chunks: pa.Table, embedder: Embedder, version: str = "v1", vectors: np.ndarray | None = None
) -> None:
    """``chunks`` (``CHUNK_COLUMNS``) as index version ``version`` of ``root``, ``LATEST`` pointing at it;
    ``vectors`` are their embeddings when already computed."""
    store.index_in_process(root, chunks, embedder, version, "test", vectors)
