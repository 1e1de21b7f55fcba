"""Embed a chunks dataset and build (or grow) its vector index in storage.

Run it anywhere the same way::

    python -m jobs.build_index input=s3://bucket/chunks output=s3://bucket/index
    ray job submit --working-dir . -- python -m jobs.build_index input=... output=...
    python -m jobs.build_index config=jobs/configs/build_index/minilm_hnsw.yaml input=... output=...

Input: chunks Parquet (a file or folder/prefix) with ``chunk_id``, ``doc_id``, ``text`` and
optionally ``page_start``, ``page_end``, ``heading``, ``source`` (``schemas.CHUNK_INPUT_COLUMNS``).
Output, under ``output``:

- ``embeddings/``: all-MiniLM-L6-v2 embeddings, committed batch by batch by a Ray Data actor
  pool sized from the cluster, keyed by model, chunk_id and text. A killed run resumes;
  a rerun embeds only new or changed chunks.
- ``versions/<run_id>/``: the FAISS HNSW index, its rows and a manifest (model and hash,
  dimension, row count, source chunks version, index parameters); ``LATEST`` names the
  current one (see ``rayfleet/retrieval/store.py``).
- ``_errors/``: chunks set aside (empty text, duplicate ids, files that do not fit the schema).

New chunks are added to the previous index (incremental); changed or removed chunks
rebuild it from the stored embeddings (nothing is embedded twice); an unchanged input
does nothing. The index mirrors its input: documents missing from ``input`` are removed
(a WARNING names how many, and the report's ``removed_documents`` counts them), so to add
documents give the whole chunks folder, not only the new files. Embeddings of another
model stored beside them (a model tried once) are left alone.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rayfleet import storage
from rayfleet.assets import folder_fingerprint, resolve_model
from rayfleet.config import BaseConfig, InputError, describe, run_job
from rayfleet.ingestion import (
    LEDGER_COLUMNS,
    current_files,
    document_holders,
    files_behind,
    ingest_ledger_beside,
    superseded_documents,
    table_of_ingest_output,
)
from rayfleet.ray_setup import WorkerPoolConfig, cluster_pool_size, init_ray
from rayfleet.retrieval import store
from rayfleet.retrieval.chunks import chunks_version, embedding_keys, read_chunks
from rayfleet.retrieval.embedder import Embedder
from rayfleet.retrieval.index import DimensionError, IndexParams, VectorIndex
from rayfleet.retrieval.store import IndexManifest
from rayfleet.tables import (
    compact_output,
    new_run_id,
    read_column_values,
    read_folder,
    read_relisting,
    read_table,
    utc_now,
    write_errors,
    write_table,
)
from schemas import embeddings_schema

logger = logging.getLogger("jobs.build_index")


class BuildIndexConfig(BaseConfig):
    """Configuration of the index build."""

    input: str = Field(..., description="Parquet file or folder/prefix of chunks (local path or s3://).")
    output: str = Field(..., description="Index root folder/prefix: embeddings, versions and LATEST (local or s3://).")
    keep_versions: int = Field(
        10, ge=0,
        description="Index versions kept after a build (the newest, LATEST's among them; older ones to roll back "
        "to); older ones are deleted. 0 keeps every version.",
    )  # fmt: skip
    errors_output: str | None = Field(None, description="Errors table folder; default <output>/_errors.")
    embedding_model: str = Field(
        "all-minilm-l6-v2", description="Sentence-transformers model: provisioned name or local folder."
    )
    batch_size: int = Field(256, ge=1, description="Chunks per actor batch (and per committed embeddings file).")
    encode_batch_size: int = Field(64, ge=1, description="Texts per model forward pass inside a batch.")
    index: IndexParams = Field(default_factory=IndexParams, description="HNSW index parameters.")
    workers: WorkerPoolConfig = Field(
        default_factory=lambda: WorkerPoolConfig(gpus_per_worker=0.0),
        description="Embedding actor pool sizing (CPU by default).",
    )
    ray_address: str | None = Field(None, description="Ray cluster address; default $RAY_ADDRESS or a local Ray.")
    follow_ingest_ledger: bool = Field(
        True,
        description="When the input is a jobs.ingest chunks table (its _files ledger beside it), index each file's "
        "current version only: a file changed since it was ingested is a new document, and its older versions' "
        "chunks are left out (RAG would cite what the file no longer says).",
    )

    @property
    def errors_uri(self) -> str:
        return self.errors_output or storage.join(self.output, "_errors")

    @property
    def embeddings_uri(self) -> str:
        return storage.join(self.output, "embeddings")


class EmbedWorker:
    """Ray Data actor: holds the embedding model and commits each batch's embeddings as one file."""

    def __init__(self, config: BuildIndexConfig, run_id: str):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config, self.run_id = config, run_id
        self.embedder = Embedder(config.embedding_model, config.encode_batch_size)

    def __call__(self, batch: dict) -> dict:
        started = time.monotonic()
        vectors = self.embedder.embed([str(text) for text in batch["text"]])
        table = embeddings_table(list(batch["embedding_key"]), list(batch["chunk_id"]), vectors, self.run_id)
        write_table(
            storage.join(self.config.embeddings_uri, f"part-{self.run_id}-{uuid.uuid4().hex[:12]}.parquet"), table
        )
        return {"embedded": [len(vectors)], "seconds": [time.monotonic() - started]}


def embeddings_table(keys: list[str], chunk_ids: list[str], vectors: np.ndarray, run_id: str) -> pa.Table:
    """The embeddings rows of one batch."""
    dimension = vectors.shape[1]
    flat = pa.array(vectors.reshape(-1), pa.float32())
    now = utc_now()
    return pa.table(
        {
            "embedding_key": pa.array(keys, pa.string()),
            "chunk_id": pa.array(chunk_ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dimension),
            "run_id": pa.array([run_id] * len(keys), pa.string()),
            "created_at": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
        },
        schema=embeddings_schema(dimension),
    )


def embed_dataset(config: BuildIndexConfig, todo: pa.Table, run_id: str) -> None:
    """Ray Data pipeline: chunks -> embed and commit (actor pool sized from the cluster), with progress."""
    import ray

    workers, claim = cluster_pool_size(config.workers)
    logger.info("embedding pool: %d worker(s), each claiming %s", workers, claim)
    rows = todo.select(["embedding_key", "chunk_id", "text"])
    # One block per batch: every worker of the pool gets work, and each batch's figures come back when it is
    # done (one block of everything would keep one worker busy and report nothing until the end).
    batches = [rows.slice(offset, config.batch_size) for offset in range(0, rows.num_rows, config.batch_size)]
    figures = ray.data.from_arrow(batches).map_batches(
        EmbedWorker,
        batch_size=config.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={"config": config, "run_id": run_id},
        compute=ray.data.ActorPoolStrategy(size=workers),
        **claim,
    )
    done, started = 0, time.monotonic()
    for batch in figures.iter_rows():
        done += int(batch["embedded"])
        elapsed = time.monotonic() - started
        logger.info(
            "progress: %d/%d chunks embedded (%.0f%%), %.1f chunks/s, ~%.0f s left",
            done, todo.num_rows, 100 * done / todo.num_rows, done / elapsed, elapsed / done * (todo.num_rows - done),
        )  # fmt: skip


def load_embeddings(embeddings_uri: str, keys: list[str]) -> np.ndarray:
    """The stored embedding of each of ``keys``, in that order. Files holding none of ``keys`` (embeddings of
    another model, whose keys differ) are not looked at further, whatever their dimension.

    Raises:
        DimensionError: the embeddings of ``keys`` have different dimensions.
        KeyError: a key with no stored embedding.
    """
    return read_relisting(
        lambda: storage.list_files(embeddings_uri, suffixes=(".parquet",)),
        lambda file_uris: _load_listed(embeddings_uri, file_uris, keys),
        "the embeddings",
    )


def _load_listed(embeddings_uri: str, file_uris: list[str], keys: list[str]) -> np.ndarray:
    """:func:`load_embeddings` from the files listed.

    Raises:
        FileNotFoundError: a file listed is gone.
    """
    wanted = pa.array(keys, pa.string())
    found: dict[str, np.ndarray] = {}
    dimensions: dict[int, str] = {}
    for file_uri in file_uris:
        table = read_table(file_uri, columns=["embedding_key", "embedding"])
        table = table.filter(pc.is_in(table["embedding_key"], wanted))
        if table.num_rows:
            dimensions.setdefault(table.schema.field("embedding").type.list_size, file_uri)
            matrix = table["embedding"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
            found.update(zip(table["embedding_key"].to_pylist(), matrix))
    if len(dimensions) > 1:
        raise DimensionError(
            f"the embeddings asked for under {embeddings_uri} have different dimensions: {dimensions} (first file "
            "of each): files from two models under one key; delete the embeddings folder and rebuild"
        )
    missing = [key for key in keys if key not in found]
    if missing:
        raise KeyError(f"{len(missing)} chunks have no stored embedding under {embeddings_uri} (first: {missing[0]})")
    return np.stack([found[key] for key in keys]).astype(np.float32)


def plan_build(
    previous: IndexManifest | None, previous_keys: list[str], keys: list[str], config: BuildIndexConfig, model_hash: str
) -> str:
    """'incremental' when the previous index holds only current chunks, built the same way; else 'full'."""
    if previous is None:
        return "full"
    same_build = previous.embedding_model_hash == model_hash and previous.index_params.model_dump(
        exclude={"ef_search"}
    ) == config.index.model_dump(exclude={"ef_search"})
    return "incremental" if same_build and set(previous_keys) <= set(keys) else "full"


def current_chunks(config: BuildIndexConfig, chunks: pa.Table) -> tuple[pa.Table, set[str]]:
    """``chunks`` without those of documents their files no longer hold (``follow_ingest_ledger``), and the
    ids of the superseded documents that were left out."""
    ledger = ingest_ledger_beside(config.input) if config.follow_ingest_ledger else None
    if ledger is None:
        return chunks, set()
    rows = read_folder(ledger, LEDGER_COLUMNS).to_pylist()
    chunks = citing_files_that_hold_them(chunks, rows)
    if behind := files_behind(rows):
        logger.warning("%d file(s) changed into something that could not be read (%s): the index keeps their last "
                       "good version; the reasons are in the ingest output's errors table",
                       len(behind), ", ".join(behind[:3]) + (", ..." if len(behind) > 3 else ""))  # fmt: skip
    superseded = superseded_documents(rows) & set(chunks["doc_id"].to_pylist())
    if not superseded:
        return chunks, superseded
    current = chunks.filter(pa.array([doc_id not in superseded for doc_id in chunks["doc_id"].to_pylist()]))
    logger.info("left out %d chunks of %d superseded document version(s): their files changed or were deleted "
                "since (ledger %s)", chunks.num_rows - current.num_rows, len(superseded), ledger)  # fmt: skip
    return current, superseded


def citing_files_that_hold_them(chunks: pa.Table, ledger: list[dict]) -> pa.Table:
    """``chunks`` whose file was renamed or deleted while another file holds the same document (an
    exact copy) citing that file: their citations named a path that no longer existed."""
    files = current_files(ledger)
    holders = document_holders(files)
    sources, doc_ids = chunks["source"].to_pylist(), chunks["doc_id"].to_pylist()
    cited = [
        source if files.get(source) == doc_id else holders.get(doc_id, source)
        for source, doc_id in zip(sources, doc_ids)
    ]
    moves = [(old, new) for old, new in zip(sources, cited) if old != new]
    if not moves:
        return chunks
    logger.info("%d chunks cite another file holding their document now: %s", len(moves),
                ", ".join(f"{old} -> {new}" for old, new in sorted(set(moves))[:5]))  # fmt: skip
    return chunks.set_column(chunks.schema.get_field_index("source"), "source", pa.array(cited, pa.string()))


def without_repeated_text(chunks: pa.Table) -> pa.Table:
    """``chunks`` with one chunk per text of a document (its first): a file of one line repeated gave
    224 identical chunks, whose one vector crowded HNSW's graph until searches for anything found them
    (recall@1 0.36 measured with 224 copies among 80 other vectors)."""
    seen: set[tuple[str, str]] = set()
    keep = []
    for key in zip(chunks["doc_id"].to_pylist(), chunks["text"].to_pylist()):
        keep.append(key not in seen)
        seen.add(key)
    if all(keep):
        return chunks
    logger.info("left out %d chunks that repeat an earlier chunk of their document word for word", keep.count(False))
    return chunks.filter(pa.array(keep))


def removed_documents(previous_rows: pa.Table, chunks: pa.Table) -> list[str]:
    """The documents (``doc_id``) of the previous version that ``chunks`` no longer holds, sorted."""
    return sorted(set(previous_rows["doc_id"].to_pylist()) - set(chunks["doc_id"].to_pylist()))


def warn_of_removed_documents(removed: list[str], previous: IndexManifest, config: BuildIndexConfig) -> None:
    """A WARNING naming how many documents the new version drops (often an ``input`` of only new chunks)."""
    shown = ", ".join(removed[:5]) + (", ..." if len(removed) > 5 else "")
    logger.warning(
        "%d document(s) of index version %s are not in the input %s and are removed from the index (%s); the "
        "index mirrors its input: to add documents, give the whole chunks folder as input",
        len(removed), previous.version, config.input, shown,
    )  # fmt: skip


def build_version(
    config: BuildIndexConfig,
    previous: IndexManifest | None,
    chunks: pa.Table,
    keys: list[str],
    run_id: str,
    model_hash: str,
    source_version: str,
    superseded: set[str] = frozenset(),
) -> tuple[IndexManifest, list[str]]:
    """Build the next index version from stored embeddings and write it; returns its manifest and the documents
    of the previous version it no longer holds though no file's change or deletion explains it (a superseded
    version is meant to go: counted apart, not warned of)."""
    index, previous_keys, removed = None, [], []
    if previous is not None:
        previous_index, previous_rows, _ = store.load_version(config.output, previous.version)
        previous_keys = previous_rows["embedding_key"].to_pylist()
        removed = [doc_id for doc_id in removed_documents(previous_rows, chunks) if doc_id not in superseded]
        if removed:
            warn_of_removed_documents(removed, previous, config)
    mode = plan_build(previous, previous_keys, keys, config, model_hash)
    if mode == "incremental":
        known = set(previous_keys)
        order = previous_keys + [key for key in keys if key not in known]
        index, added = previous_index, order[len(previous_keys) :]
    else:
        order, added = keys, keys
    if added:
        vectors = load_embeddings(config.embeddings_uri, added)
        index = index if index is not None else VectorIndex.create(vectors.shape[1], config.index)
        index.add(vectors)
    position = {key: row for row, key in enumerate(keys)}
    rows = chunks.take(pa.array([position[key] for key in order], pa.int64())).append_column(
        "embedding_key", pa.array(order, pa.string())
    )
    manifest = IndexManifest(
        version=run_id, created_at=utc_now().isoformat(), embedding_model=config.embedding_model,
        embedding_model_hash=model_hash, dimension=index.dimension, row_count=len(index), source=config.input,
        source_chunks_version=source_version, index_params=config.index, faiss_version=store.faiss_version(),
        parent_version=previous.version if mode == "incremental" else None, build_mode=mode, added_rows=len(added),
    )  # fmt: skip
    store.save_version(config.output, index, rows, manifest)
    return manifest, removed


def main(config: BuildIndexConfig) -> dict:
    """:func:`update_index`, its report printed as one JSON line."""
    report = update_index(config)
    print(json.dumps(report), flush=True)
    return report


def update_index(config: BuildIndexConfig) -> dict:
    """Bring the index at ``config.output`` up to date with ``config.input`` (the index mirrors the input).

    Returns:
        The run report, with ``removed_documents``: documents of the previous version not in the input.
    """
    run_id, started = new_run_id(), time.monotonic()
    logger.info("run %s with config:\n%s", run_id, describe(config))
    config = config.model_copy(update={"input": table_of_ingest_output(config.input, "chunks")})
    storage.ensure_bucket(config.output)
    chunks, errors = read_chunks(config.input, run_id)
    write_errors(config.errors_uri, errors)
    compact_output(config.errors_uri, run_id)  # every run sets the same bad chunks aside again: a file per run
    chunks, superseded = current_chunks(config, chunks)
    chunks = without_repeated_text(chunks)
    if not chunks.num_rows:
        raise InputError(f"no valid chunks in {config.input} ({len(errors)} set aside, see {config.errors_uri})")
    model_hash = folder_fingerprint(resolve_model(config.embedding_model))
    keys = embedding_keys(chunks, model_hash)
    source_version = chunks_version(chunks, keys)
    previous = store.load_manifest(config.output) if store.latest_version(config.output) else None
    report = {"run_id": run_id, "chunks": chunks.num_rows, "errors": len(errors), "output": config.output,
              "superseded_documents": len(superseded)}  # fmt: skip
    if (
        previous is not None
        and previous.source_chunks_version == source_version
        and previous.index_params == config.index
    ):
        logger.info("index %s already holds exactly these %d chunks: nothing to do", previous.version, chunks.num_rows)
        report.update(
            embedded=0, build_mode="unchanged", version=previous.version, rows=previous.row_count, removed_documents=0
        )
    else:
        done = read_column_values(config.embeddings_uri, "embedding_key")
        todo = chunks.append_column("embedding_key", pa.array(keys, pa.string())).filter(
            pa.array([key not in done for key in keys])
        )
        logger.info(
            "%d chunks: %d to embed, %d already embedded, %d set aside",
            chunks.num_rows,
            todo.num_rows,
            chunks.num_rows - todo.num_rows,
            len(errors),
        )
        if todo.num_rows:
            init_ray(config.ray_address)
            embed_dataset(config, todo, run_id)
            compact_output(config.embeddings_uri, run_id)  # a file per batch, and per run of an ingest per new file
        manifest, removed = build_version(
            config, previous, chunks, keys, run_id, model_hash, source_version, superseded
        )
        logger.info(
            "wrote index version %s (%s, %d rows, %d added)",
            manifest.version,
            manifest.build_mode,
            manifest.row_count,
            manifest.added_rows,
        )
        report.update(
            embedded=todo.num_rows,
            build_mode=manifest.build_mode,
            version=manifest.version,
            rows=manifest.row_count,
            removed_documents=len(removed),
        )
    pruned = store.prune_versions(config.output, config.keep_versions)
    if pruned:
        logger.info("deleted %d index version(s) older than the newest %d: %s", len(pruned), config.keep_versions,
                    ", ".join(pruned[:3]) + (", ..." if len(pruned) > 3 else ""))  # fmt: skip
    report["pruned_versions"] = len(pruned)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


if __name__ == "__main__":
    run_job(__spec__, "BuildIndexConfig")
