"""The embedder and the real ACL chunks the retrieval tests search."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rayfleet.retrieval import Embedder
from rayfleet.retrieval.chunks import CHUNK_COLUMNS


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def chunks(acl_chunks) -> pa.Table:
    return pa.Table.from_pylist(acl_chunks, schema=CHUNK_COLUMNS)
