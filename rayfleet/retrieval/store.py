"""Index versions in storage (local or ``s3://``), one folder each, plus a ``LATEST`` pointer.

Layout under an index root::

    <root>/versions/<version>/index.faiss     the serialized FAISS index
    <root>/versions/<version>/rows.parquet    chunk per vector id (schemas.INDEX_ROWS_SCHEMA)
    <root>/versions/<version>/manifest.json   model and hash, dimension, rows, source version, params
    <root>/LATEST                             the current version's name, written last

A version folder is complete before ``LATEST`` names it, so a reader never sees half an
index; the newest older versions stay (a rollback is one small write) and
:func:`prune_versions` deletes the rest (a build per new file, as the dispatcher runs it, would
otherwise keep a whole index per file ever added). A reader loads a version whole, so deleting
one a server has loaded takes nothing from it.
"""

from __future__ import annotations

import io
import json

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from rayfleet import storage
from rayfleet.config import BaseConfig
from rayfleet.retrieval.chunks import chunks_version, embedding_keys
from rayfleet.retrieval.embedder import Embedder
from rayfleet.retrieval.index import IndexParams, VectorIndex
from rayfleet.tables import utc_now, write_table
from schemas import INDEX_ROWS_SCHEMA

LATEST = "LATEST"


class IndexManifest(BaseConfig):
    """What an index version holds and how it was built."""

    version: str = Field(..., description="Name of this version (the run id that built it).")
    created_at: str = Field(..., description="UTC time the version was written (ISO 8601).")
    embedding_model: str = Field(..., description="Embedding model name or folder.")
    embedding_model_hash: str = Field(..., description="Fingerprint of the embedding model's weights and config.")
    dimension: int = Field(..., ge=1, description="Vector dimension.")
    row_count: int = Field(..., ge=0, description="Vectors (chunks) in the index.")
    source: str = Field(..., description="The chunks input (file or folder) the index was built from.")
    source_chunks_version: str = Field(
        ..., description="Hash of the (chunk_id, text) set indexed: equal means same input."
    )
    index_kind: str = Field("faiss.IndexHNSWFlat", description="FAISS index class.")
    metric: str = Field("inner_product", description="Score: inner product of unit vectors (cosine).")
    index_params: IndexParams = Field(..., description="HNSW parameters.")
    faiss_version: str = Field(..., description="faiss version that wrote the index.")
    parent_version: str | None = Field(None, description="The version this one grew from (incremental), if any.")
    build_mode: str = Field(..., description="'full' (built from all embeddings) or 'incremental' (parent + new rows).")
    added_rows: int = Field(..., ge=0, description="Rows added to the parent (all rows for a full build).")


def version_uri(root: str, version: str) -> str:
    return storage.join(root, "versions", version)


def latest_version(root: str) -> str | None:
    """The version ``LATEST`` names, or None for an index root with no version yet."""
    pointer = storage.join(root, LATEST)
    return storage.read_bytes(pointer).decode().strip() if storage.exists(pointer) else None


def save_version(root: str, index: VectorIndex, rows: pa.Table, manifest: IndexManifest) -> str:
    """Write one complete version, then point ``LATEST`` at it. Returns the version's URI."""
    if rows.num_rows != len(index) or manifest.row_count != len(index):
        raise ValueError(f"rows ({rows.num_rows}), manifest ({manifest.row_count}) and index ({len(index)}) disagree")
    folder = version_uri(root, manifest.version)
    storage.write_bytes(storage.join(folder, "index.faiss"), index.to_bytes())
    write_table(storage.join(folder, "rows.parquet"), rows.cast(INDEX_ROWS_SCHEMA))
    storage.write_bytes(storage.join(folder, "manifest.json"), manifest.model_dump_json(indent=2).encode())
    storage.write_bytes(storage.join(root, LATEST), manifest.version.encode())
    return folder


def prune_versions(root: str, keep: int) -> list[str]:
    """Delete every version but the newest ``keep`` (by their manifests' ``created_at``: run ids name the
    second only) and the one ``LATEST`` names; ``keep`` 0 deletes none. Returns the deleted versions' names,
    oldest first."""
    names = storage.subfolder_names(storage.join(root, "versions")) if keep > 0 else []
    if len(names) <= keep:
        return []
    newest_first = sorted(names, key=lambda name: version_created_at(root, name), reverse=True)
    latest = latest_version(root)
    pruned = [name for name in reversed(newest_first[keep:]) if name != latest]
    for name in pruned:
        storage.delete_folder(version_uri(root, name))
    return pruned


def version_created_at(root: str, version: str) -> str:
    """When a version was written (its manifest's ``created_at``); "" for a folder without a readable manifest
    (a build that failed part-way), which counts as the oldest."""
    try:
        return json.loads(storage.read_bytes(storage.join(version_uri(root, version), "manifest.json")))["created_at"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def index_in_process(
    root: str,
    chunks: pa.Table,
    embedder: Embedder,
    version: str,
    source: str,
    vectors: np.ndarray | None = None,
    params: IndexParams | None = None,
) -> IndexManifest:
    """Embed ``chunks`` (``CHUNK_COLUMNS``) here and write them as a full version ``version`` of ``root``.

    For a few thousand chunks at most (a benchmark, a test): ``jobs.build_index`` embeds on a
    Ray cluster, keeps the embeddings and builds incrementally. ``vectors`` are the chunks'
    embeddings when already computed.
    """
    params = params or IndexParams()
    index = VectorIndex.create(embedder.dimension, params)
    index.add(embedder.embed(chunks["text"].to_pylist()) if vectors is None else vectors)
    keys = embedding_keys(chunks, embedder.fingerprint)
    manifest = IndexManifest(
        version=version, created_at=utc_now().isoformat(), embedding_model=embedder.model_name,
        embedding_model_hash=embedder.fingerprint, dimension=embedder.dimension, row_count=len(index),
        source=source, source_chunks_version=chunks_version(chunks, keys), index_params=params,
        faiss_version=faiss_version(), build_mode="full", added_rows=len(index),
    )  # fmt: skip
    save_version(root, index, chunks.append_column("embedding_key", pa.array(keys)), manifest)
    return manifest


def load_manifest(root: str, version: str | None = None) -> IndexManifest:
    """The manifest of ``version`` (default: the latest).

    Raises:
        FileNotFoundError: the root holds no index version.
    """
    version = version or latest_version(root)
    if version is None:
        raise FileNotFoundError(
            f"no index at {root}: {storage.join(root, LATEST)} does not exist (run jobs.build_index)"
        )
    data = json.loads(storage.read_bytes(storage.join(version_uri(root, version), "manifest.json")))
    return IndexManifest.model_validate(data)


def load_version(root: str, version: str | None = None) -> tuple[VectorIndex, pa.Table, IndexManifest]:
    """Index, rows and manifest of ``version`` (default: the latest), checked against each other."""
    manifest = load_manifest(root, version)
    folder = version_uri(root, manifest.version)
    index = VectorIndex.from_bytes(storage.read_bytes(storage.join(folder, "index.faiss")), manifest.index_params)
    rows = with_missing_columns(pq.read_table(io.BytesIO(storage.read_bytes(storage.join(folder, "rows.parquet")))))
    if index.dimension != manifest.dimension or len(index) != manifest.row_count or rows.num_rows != manifest.row_count:
        raise ValueError(
            f"index version {folder} is inconsistent: manifest says {manifest.row_count} rows of dimension "
            f"{manifest.dimension}, index has {len(index)} of {index.dimension}, rows table {rows.num_rows}"
        )
    return index, rows, manifest


def with_missing_columns(rows: pa.Table) -> pa.Table:
    """``rows`` with every nullable column of ``INDEX_ROWS_SCHEMA`` it lacks (a version written before that
    column existed) added as nulls."""
    for field in INDEX_ROWS_SCHEMA:
        if field.name not in rows.schema.names and field.nullable:
            rows = rows.append_column(field, pa.nulls(rows.num_rows, field.type))
    return rows


def faiss_version() -> str:
    return faiss.__version__
