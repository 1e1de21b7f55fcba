"""Ingestion: files (PDF, HTML, Markdown, text, Office, OpenDocument, EPUB, CSV, e-mail, RTF, images) -> tables.

Run it anywhere the same way::

    python -m jobs.ingest input=s3://bucket/raw output=s3://bucket/corpus
    python -m jobs.ingest input=[../shared/data/pdfs,docs] output=.data/corpus chunking.max_tokens=384
    ray job submit --working-dir . -- python -m jobs.ingest config=jobs/configs/ingest/smollm2_default.yaml \\
        input=... output=...

Every file under ``input`` (one or more local folders or ``s3://`` prefixes) is read,
parsed and chunked by a Ray Data actor pool; each batch of files is committed as
complete Parquet files under ``output``:

- ``documents/``: one row per distinct content (``doc_id`` = sha256 of the bytes),
  with source, title, text, page count and page offsets, headings, MIME type, size and
  parse time (``schemas.DOCUMENTS_SCHEMA``; ``jobs.summarize`` reads it as it is);
- ``chunks/``: token-bounded chunks with page range, heading, and their document's source and
  title for citations (``schemas.CHUNKS_SCHEMA``);
- ``errors/``: files that gave no document (corrupt, encrypted, no text, legacy or unknown
  type, oversize) with the reason; the run finishes the rest;
- ``_files/``: the ledger of every file handled (``schemas.FILES_SCHEMA``); a file whose read from
  storage failed is not in it (the run reports it as ``unread_files`` and exits 1; the next reads it again).

Scanned PDF pages and pictures of text (PNG, JPEG, TIFF...) are read by OCR (``ocr.*``,
:mod:`rayfleet.text.ocr`). A zip or tar archive (``.tar.gz`` and the like too) is listed as the files
it holds, each a file of its own (``handbook.zip!/hr/leave.pdf``, :mod:`rayfleet.archives`).

Exact duplicates (same bytes) are kept once and counted. A rerun skips every file whose
latest ledger row has its size and modification time, so it does no work twice and
picks up new, changed or restored files incrementally. A file gone from a folder the job is given, or
an input file an earlier run ingested that no longer exists (the dispatcher runs the job on a
deleted file's name), is recorded as deleted (``prune_deleted``), and an index built from this
output leaves it out,
as it leaves out a changed file's earlier versions. Their text stays in ``documents/`` and ``chunks/``
(the corpus's history) unless ``purge_superseded=true`` removes it. With ``index_output=`` the job then brings
that retrieval index up to date with every chunk (``jobs.build_index``: only new chunks are
embedded), so one event-triggered run takes new files all the way to the serving RAG path.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from rayfleet import storage
from rayfleet.archives import (
    MAX_INFLATED_TAR_BYTES,
    is_archive,
    split_member_uri,
    with_archives_unpacked,
    within_archive,
)
from rayfleet.config import BaseConfig, describe, run_job
from rayfleet.ingestion import (
    LEDGER_COLUMNS,
    OUTCOME_DELETED,
    OUTCOME_DUPLICATE,
    OUTCOME_ERROR,
    ChunkingConfig,
    FileIngester,
    FileResult,
    is_system_file,
    latest_rows,
    superseded_documents,
)
from rayfleet.ray_setup import WorkerPoolConfig, cluster_pool_size, init_ray
from rayfleet.tables import (
    compact_output,
    drop_duplicate_ids,
    drop_rows_of,
    new_run_id,
    output_file_bytes_field,
    read_folder,
    utc_now,
    write_errors,
    write_table,
)
from rayfleet.text.ocr import OcrConfig
from schemas import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, FILES_SCHEMA

logger = logging.getLogger("jobs.ingest")
INDEX_PASSES = 3  # index updates after a run: the update, then checks that nothing overlapping undid it


def ingest_pool_defaults() -> WorkerPoolConfig:
    # Parsing is one CPU per file and the input is a list of names held in memory (no
    # Ray Data read tasks to starve), so the pool may claim every CPU of every node.
    return WorkerPoolConfig(
        max_workers=64, cpus_per_worker=1.0, gpus_per_worker=0.0, reserve_cpus=0.0, cpu_workers_per_node=64
    )


class IngestConfig(BaseConfig):
    """Configuration of the ingestion job."""

    input: list[str] = Field(
        ..., description="Folders/prefixes or files to ingest (local paths or s3://); one or a list."
    )
    output: str = Field(..., description="Folder/prefix for the documents, chunks, errors and ledger tables.")
    max_file_bytes: int = Field(
        100 * 2**20,
        ge=1,
        description="Files larger than this, or inflating past it (compressed, or in an archive), are set aside.",
    )
    files_per_batch: int = Field(
        4, ge=1, description="Files per worker batch (and per committed output file until merged)."
    )
    max_archive_bytes: int = Field(
        MAX_INFLATED_TAR_BYTES,
        ge=1,
        description="A compressed tar (.tar.gz, .tgz, .tar.bz2, .tar.xz) whose contents inflate past this is not "
        "listed but set aside: listing decompresses it whole, a tar bomb too. Zips and plain tars are listed "
        "from their directory or headers, whatever their size.",
    )
    output_file_bytes: int = output_file_bytes_field("files of each table")
    retry_errors: bool = Field(False, description="Try again files that an earlier run set aside as errors.")
    missing_ok: bool = Field(
        False,
        description="An input that does not exist and never held an ingested file is nothing to do, not "
        "an error (the dispatcher's rules: a file deleted before its upload was ingested, a lock file's deletion).",
    )
    prune_deleted: bool = Field(
        True,
        description="Record as deleted the files an earlier run ingested under a folder of `input` that it no longer "
        "holds, or at an `input` that no longer exists (a deleted file): an index built from this output leaves "
        "their documents out.",
    )
    purge_superseded: bool = Field(
        False,
        description="Remove from documents/ and chunks/ the rows of documents no file holds any more (deleted "
        "files, the earlier versions of changed ones) instead of keeping them as history; run it alone, not "
        "beside another ingest run on the same output.",
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunk size, overlap and tokenizer.")
    ocr: OcrConfig = Field(default_factory=OcrConfig, description="OCR of scanned PDF pages and image files.")
    text_extensions: list[str] = Field(
        default_factory=list,
        description="More file extensions to read as plain text, beyond those known (docs/ingest.md), e.g. "
        "[.cfg, .ini, .sql, .py]; a file of another unknown type is set aside.",
    )
    workers: WorkerPoolConfig = Field(default_factory=ingest_pool_defaults, description="Parser actor pool sizing.")
    index_output: str | None = Field(
        None,
        description="Index root to bring up to date with every chunk after the run (jobs.build_index with its "
        "defaults; a serving RAG path on it picks the new version up); none: no index update.",
    )
    ray_address: str | None = Field(None, description="Ray cluster address; default $RAY_ADDRESS or a local Ray.")

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("text_extensions", mode="before")
    @classmethod
    def _extensions_with_a_dot(cls, value):
        """``cfg``, ``.CFG`` and ``.cfg`` alike, one or a list."""
        extensions = [value] if isinstance(value, str) else value
        if not isinstance(extensions, list):
            return extensions
        bad = [item for item in extensions if not isinstance(item, str) or not item.strip(". ") or "/" in item]
        if bad:
            raise ValueError(f"text_extensions {bad} are not file extensions (e.g. .cfg)")
        return ["." + item.strip().lstrip(".").lower() for item in extensions]

    @model_validator(mode="after")
    def _archive_holds_a_file(self) -> "IngestConfig":
        """An archive set aside for inflating past ``max_archive_bytes`` is then ``oversize`` for ``max_file_bytes``."""
        if self.max_archive_bytes < self.max_file_bytes:
            raise ValueError(f"max_archive_bytes ({self.max_archive_bytes}) is below max_file_bytes "
                             f"({self.max_file_bytes}): an archive must be able to hold the largest file")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _input_outside_output(self) -> "IngestConfig":
        """Files under ``output`` are the job's own tables and never ingested, so an input there would be nothing."""
        inside = [uri for uri in self.input if storage.contains(self.output, uri)]
        if inside:
            raise ValueError(f"input {inside} lies in output ({self.output}), whose files are never ingested (they are "
                             "the job's own tables): give the output a folder of its own")  # fmt: skip
        return self

    def table(self, name: str) -> str:
        """URI of one output table: documents, chunks, errors or _files."""
        return storage.join(self.output, name)


class IngestWorker:
    """Ray Data actor: ingests batches of files and commits each batch's tables."""

    def __init__(self, config: IngestConfig, run_id: str, known_sources: dict[str, str]):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config, self.run_id, self.known_sources = config, run_id, known_sources
        self.ingester = FileIngester(config.chunking, config.max_file_bytes, run_id, config.ocr, config.text_extensions)

    def __call__(self, batch: pa.Table) -> dict:
        """Ingest the batch's files and commit them; returns the batch's figures for progress.

        The ledger is written last: a run killed before it redoes these files, and finds
        their content already in ``documents`` (no duplicate is made).
        """
        started = time.monotonic()
        files = [storage.FileEntry(**row) for row in batch.to_pylist()]
        results = [self.ingester.ingest(file, self.known_sources) for file in files]
        commit(self.config, self.run_id, results)
        documents = [result.document for result in results if result.document]
        return {
            "files": [len(results)],
            "documents": [len(documents)],
            "pages": [sum(document["page_count"] for document in documents)],
            "chunks": [sum(len(result.chunks) for result in results)],
            "duplicates": [sum(bool(r.ledger) and r.ledger["outcome"] == OUTCOME_DUPLICATE for r in results)],
            "errors": [sum(result.error is not None for result in results)],
            "unread": [json.dumps([f"{file.uri} ({r.unread})" for file, r in zip(files, results) if r.unread])],
            "seconds": [time.monotonic() - started],
        }


def commit(config: IngestConfig, run_id: str, results: list[FileResult]) -> None:
    """Write one batch's chunks, documents, errors and (last) ledger rows, each as one new file."""
    name = f"part-{run_id}-{uuid.uuid4().hex[:12]}.parquet"
    chunks = [chunk for result in results for chunk in result.chunks]
    documents = [result.document for result in results if result.document]
    if chunks:
        write_table(storage.join(config.table("chunks"), name), pa.Table.from_pylist(chunks, CHUNKS_SCHEMA))
    if documents:
        write_table(storage.join(config.table("documents"), name), pa.Table.from_pylist(documents, DOCUMENTS_SCHEMA))
    write_errors(config.table("errors"), [result.error for result in results if result.error])
    ledger = [result.ledger for result in results if result.ledger]  # none for a file whose read failed
    if ledger:
        write_table(storage.join(config.table("_files"), name), pa.Table.from_pylist(ledger, FILES_SCHEMA))


@dataclass
class InputListing:
    """What the inputs hold now."""

    files: list[storage.FileEntry]  # every file under the inputs, once, but the job's own output
    system_files: int  # Office lock files, Thumbs.db, desktop.ini: passed over
    folders: list[str]  # the inputs that are folders, as ``uri/`` prefixes: where deleted files are looked for
    missing: list[str]  # the inputs that no longer exist (a deleted file or folder)
    hidden: list[str] = field(default_factory=list)  # files under a name starting with ".": passed over
    unread: list[str] = field(default_factory=list)  # archives a read from storage failed to list: left as they were


DOCUMENT_FOLDERS_HIDE = (".",)  # .git/, .DS_Store; a "_" name is a document's (Hugo's _index.md, Jekyll's _posts/)


def list_input_files(config: IngestConfig) -> InputListing:
    """Every file under the inputs, and which inputs are folders or gone."""
    found: dict[str, storage.FileEntry] = {}
    folders, missing, hidden, unread = [], [], [], []
    for uri in config.input:
        resolved = storage.resolve(uri).uri
        try:
            entries = storage.list_entries(uri, hidden=DOCUMENT_FOLDERS_HIDE, skipped=hidden)
        except FileNotFoundError:
            missing.append(resolved.rstrip("/"))
            continue
        if not (len(entries) == 1 and entries[0].uri == resolved):
            folders.append(resolved.rstrip("/") + "/")
        elif is_archive(resolved):
            folders.append(resolved)  # its members are the files it lists (within: "<archive>!/...")
        for entry in with_archives_unpacked(entries, unread, config.max_archive_bytes):
            if not storage.contains(config.output, entry.uri):
                found.setdefault(entry.uri, entry)
    documents = [entry for entry in found.values() if not is_system_file(entry.uri)]
    return InputListing(documents, len(found) - len(documents), folders, missing, hidden, unread)


def within(source: str, places: list[str]) -> bool:
    """Whether ``source`` is one of ``places`` or under one (a folder's ``uri/`` prefix, or a missing input),
    or a file inside one that is an archive."""
    return any(
        source == place or source.startswith(place.rstrip("/") + "/") or within_archive(source, place)
        for place in places
    )


def require_known(missing: list[str], latest: dict[str, dict]) -> None:
    """Fail on an input that does not exist and never held an ingested file (a wrong path, not a deletion).

    Raises:
        FileNotFoundError: naming those inputs.
    """
    unknown = [uri for uri in missing if not any(within(source, [uri]) for source in latest)]
    if unknown:
        raise FileNotFoundError(f"no file or folder at {', '.join(unknown)} (and no earlier run ingested one there)")


def warn_of_vanished_files_elsewhere(listing: InputListing, latest: dict[str, dict]) -> list[str]:
    """Warn of local files whose ``latest`` ledger row holds them current, outside this run's inputs, that no
    longer exist (their folder was moved or renamed): no run records them deleted, so their documents stay in
    the corpus and the index. Returns them. (Files on S3 are not looked up: one request each.)"""
    places = listing.folders + listing.missing
    vanished = [
        source for source, row in sorted(latest.items())
        if row["outcome"] != OUTCOME_DELETED and not within(source, places) and not storage.is_s3_uri(source)
        and not os.path.exists(local_file_of(source))
    ]  # fmt: skip
    if vanished:
        logger.warning(
            "%d file(s) ingested before from outside this run's input no longer exist (%s): their documents stay "
            "in the corpus and the index; if their folder was moved, give the old one as an input too "
            "(input=[<new>, <old>]) and its files are recorded deleted",
            len(vanished), ", ".join(vanished[:3]) + (", ..." if len(vanished) > 3 else ""),
        )  # fmt: skip
    return vanished


def local_file_of(source: str) -> str:
    """The local file a ledger source lies in: the archive for a member of one."""
    member = split_member_uri(source)
    return member[0] if member else source


def plan_files(
    config: IngestConfig, files: list[storage.FileEntry], latest: dict[str, dict]
) -> tuple[list[storage.FileEntry], int]:
    """The files this run must handle, and how many are skipped as already done: as big and as old as in
    their ``latest`` ledger row. A file deleted and put back is done again, and so is one put back as an
    earlier version (a backup restored with its times, ``cp -p``, ``rsync -a``): an older row is no
    longer the file's state."""
    done = {
        (row["source"], row["bytes"], row["modified"])
        for row in latest.values()
        if row["outcome"] != OUTCOME_DELETED and not (config.retry_errors and row["outcome"] == OUTCOME_ERROR)
    }
    todo = [entry for entry in files if (entry.uri, entry.size, entry.modified) not in done]
    return todo, len(files) - len(todo)


def record_deleted_files(config: IngestConfig, listing: InputListing, latest: dict[str, dict], run_id: str) -> int:
    """Ledger rows ``deleted`` for files whose ``latest`` row holds them current under the listing's folders, or
    at its missing inputs, that the listing no longer has (but not those of an archive it could not read);
    returns how many."""
    places = listing.folders + listing.missing
    if not (config.prune_deleted and places):
        return 0
    present = {entry.uri for entry in listing.files} | set(listing.hidden)  # a hidden file named itself is still there
    gone = [
        row for source, row in sorted(latest.items())
        if row["outcome"] != OUTCOME_DELETED and source not in present and within(source, places)
        and not within(source, listing.unread)
    ]  # fmt: skip
    if gone:
        now = utc_now()
        rows = [{"source": row["source"], "bytes": 0, "modified": "", "doc_id": row["doc_id"],
                 "outcome": OUTCOME_DELETED, "run_id": run_id, "created_at": now} for row in gone]  # fmt: skip
        ledger_file = storage.join(config.table("_files"), f"{run_id}-deleted.parquet")
        write_table(ledger_file, pa.Table.from_pylist(rows, FILES_SCHEMA))
        logger.info("%d file(s) ingested before are gone from %s: recorded as deleted (%s)", len(gone), places,
                    ", ".join(row["source"] for row in gone[:5]) + (", ..." if len(gone) > 5 else ""))  # fmt: skip
    return len(gone)


def purge_superseded_documents(config: IngestConfig) -> int:
    """Remove the rows of superseded documents (no file holds them now) from ``documents/``, then ``chunks/``;
    returns how many documents were removed. In that order a run killed in between leaves chunks without
    their document, still superseded, which the next purge removes; a file put back meanwhile is parsed
    again (its document is gone) and keeps its chunks. The other order would leave a document without
    chunks that a file put back takes as already ingested, never indexed."""
    superseded = superseded_documents(read_folder(config.table("_files"), LEDGER_COLUMNS).to_pylist())
    documents = drop_rows_of(config.table("documents"), "doc_id", superseded)
    chunks = drop_rows_of(config.table("chunks"), "doc_id", superseded)
    if documents or chunks:
        logger.info("purged %d superseded document(s) and %d of their chunks from %s (no file holds them now)",
                    documents, chunks, config.output)  # fmt: skip
    return documents


def known_documents(config: IngestConfig) -> dict[str, str]:
    """``doc_id -> source`` of every document already ingested."""
    table = read_folder(config.table("documents"), ["doc_id", "source"])
    return dict(zip(table["doc_id"].to_pylist(), table["source"].to_pylist()))


def ingest_dataset(
    config: IngestConfig, files: list[storage.FileEntry], run_id: str, known: dict[str, str]
) -> "Progress":
    """Run the Ray Data pipeline (file names -> ingest and commit, in an actor pool) with progress lines."""
    import ray

    workers, claim = cluster_pool_size(config.workers)
    workers = min(workers, len(files))
    logger.info("parser pool: %d worker(s), each claiming %s", workers, claim)
    items = [{"uri": entry.uri, "size": entry.size, "modified": entry.modified} for entry in files]
    batch_figures = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        IngestWorker,
        batch_size=config.files_per_batch,
        batch_format="pyarrow",
        fn_constructor_kwargs={"config": config, "run_id": run_id, "known_sources": known},
        compute=ray.data.ActorPoolStrategy(size=workers),
        **claim,
    )
    progress = Progress(len(files))
    for figures in batch_figures.iter_rows():
        progress.add(figures)
    return progress


class Progress:
    """Driver-side progress lines: files done of total, pages, chunks, errors and throughput."""

    FIGURES = ("files", "documents", "pages", "chunks", "duplicates", "errors")

    def __init__(self, total: int):
        self.total, self.started = total, time.monotonic()
        self.counts = dict.fromkeys(self.FIGURES, 0)
        self.unread: list[str] = []  # "uri (why)" of the files whose read from storage failed

    def add(self, figures: dict) -> None:
        for name in self.FIGURES:
            self.counts[name] += int(figures[name])
        self.unread += json.loads(figures["unread"])
        elapsed = time.monotonic() - self.started
        logger.info(
            "progress: %d/%d files, %d documents, %d pages (%.1f pages/s), %d chunks, %d duplicates, %d errors%s",
            self.counts["files"], self.total, self.counts["documents"], self.counts["pages"],
            self.counts["pages"] / elapsed, self.counts["chunks"], self.counts["duplicates"], self.counts["errors"],
            f", {len(self.unread)} unread" if self.unread else "",
        )  # fmt: skip


def main(config: IngestConfig) -> dict:
    """Ingest every file of ``config.input`` not already in ``config.output``.

    Returns:
        The run report (also logged and printed as one JSON line).
    """
    run_id = new_run_id()
    started = time.monotonic()
    logger.info("run %s with config:\n%s", run_id, describe(config))
    listing = list_input_files(config)
    latest = latest_rows(read_folder(config.table("_files"), LEDGER_COLUMNS).to_pylist())  # each file's, once
    if not config.missing_ok:
        require_known(listing.missing, latest)
    storage.ensure_bucket(config.output)  # after the input is known: a mistyped one leaves no output behind
    deleted = record_deleted_files(config, listing, latest, run_id)
    warn_of_vanished_files_elsewhere(listing, latest)
    todo, already_done = plan_files(config, listing.files, latest)  # the rows just recorded are of files not listed
    logger.info("%d files: %d to ingest, %d already done (%d system files and %d hidden ones passed over%s)",
                len(listing.files), len(todo), already_done, listing.system_files, len(listing.hidden),
                f": {', '.join(listing.hidden[:3])}{', ...' if len(listing.hidden) > 3 else ''}"
                if listing.hidden else "")  # fmt: skip
    unread = []
    if todo:
        init_ray(config.ray_address)
        unread = ingest_dataset(config, todo, run_id, known_documents(config)).unread
    # Two copies of one content in the same run were both parsed; keep the first.
    removed = drop_duplicate_ids(config.table("documents"), "doc_id", expected=True)
    drop_duplicate_ids(config.table("chunks"), "chunk_id", expected=True)
    purged = purge_superseded_documents(config) if config.purge_superseded else 0
    for table in ("documents", "chunks", "_files", "errors"):
        compact_output(config.table(table), run_id, config.output_file_bytes)
    report = run_report(config, run_id, already_done, removed, listing.system_files, time.monotonic() - started)
    report["deleted"] = deleted
    report["hidden_files_skipped"] = len(listing.hidden)
    report["files_in_error"] = report["errors"] + set_aside_before(latest, listing.files, todo)
    report["unread_archives"] = len(listing.unread)
    report["unread_files"] = len(unread)
    if unread:
        logger.error("%d file(s) could not be read from storage, left as they were for the next run: %s",
                     len(unread), "; ".join(unread[:5]) + ("; ..." if len(unread) > 5 else ""))  # fmt: skip
    report["purged_documents"] = purged
    if config.index_output:
        report["index"] = update_index_after_ingest(config)
    print(json.dumps(report), flush=True)
    return report


def update_index_after_ingest(config: IngestConfig) -> dict | None:
    """The index at ``config.index_output`` brought up to date with all chunks; None while there are none.

    Ingest runs for different files may overlap, and so may their index updates: one that read the
    chunks before another run committed its own can point ``LATEST`` at a version without them. So
    each update is checked by one more pass, which finds the index unchanged unless something like
    that happened, and then updates it again (at most :data:`INDEX_PASSES` passes).
    """
    from jobs.build_index import BuildIndexConfig, update_index

    if not read_folder(config.table("chunks"), ["chunk_id"]).num_rows:
        logger.info("no chunks yet: index %s left as it is", config.index_output)
        return None
    index_config = BuildIndexConfig(input=config.table("chunks"), output=config.index_output,
                                    ray_address=config.ray_address)  # fmt: skip
    report = update_index(index_config)
    for _ in range(INDEX_PASSES - 1):
        check = update_index(index_config)
        if check["build_mode"] == "unchanged":
            break
        logger.info("index %s changed under this run (an overlapping ingest): updated again", config.index_output)
        report = {**check, "embedded": report["embedded"] + check["embedded"]}
    logger.info("index %s: version %s (%s, %d rows)", config.index_output, report["version"], report["build_mode"],
                report["rows"])  # fmt: skip
    return report


def run_report(
    config: IngestConfig, run_id: str, already_done: int, duplicates_removed: int, system_files: int, seconds: float
) -> dict:
    """Figures of this run, read back from what it wrote."""
    ledger = read_folder(config.table("_files"), ["run_id", "outcome"])
    mine = ledger.filter(pc.equal(ledger["run_id"], run_id)).column("outcome").to_pylist() if ledger.num_rows else []
    documents = read_folder(config.table("documents"), ["run_id", "page_count"])
    new_documents = documents.filter(pc.equal(documents["run_id"], run_id)) if documents.num_rows else documents
    chunks = read_folder(config.table("chunks"), ["run_id"])
    pages = int(pc.sum(new_documents["page_count"]).as_py() or 0) if new_documents.num_rows else 0
    return {
        "run_id": run_id,
        "files": len(mine) - mine.count(OUTCOME_DELETED),
        "already_done": already_done,
        "documents": new_documents.num_rows,
        "pages": pages,
        "chunks": int(pc.sum(pc.equal(chunks["run_id"], run_id)).as_py() or 0) if chunks.num_rows else 0,
        "duplicates": mine.count(OUTCOME_DUPLICATE) + duplicates_removed,
        "errors": mine.count(OUTCOME_ERROR),
        "system_files_skipped": system_files,
        "seconds": round(seconds, 1),
        "pages_per_s": round(pages / seconds, 2) if seconds else 0.0,
        "output": config.output,
    }


def set_aside_before(latest: dict[str, dict], files: list[storage.FileEntry], todo: list[storage.FileEntry]) -> int:
    """How many of the input's ``files`` that this run skipped (not in ``todo``) stand set aside by an earlier
    run (their ``latest`` ledger row, read at the start, an error); with this run's errors, the files in
    error now."""
    handled = {file.uri for file in todo}
    skipped = [latest.get(file.uri) for file in files if file.uri not in handled]
    return sum(1 for row in skipped if row is not None and row["outcome"] == OUTCOME_ERROR)


def exit_status(report: dict) -> int:
    """The command's exit status: 1 when the input holds files and every one of them stands set aside (now or
    by an earlier run), so a scheduler, and a dispatcher's retries, see the run failed each time, or when an
    archive of the input could not be read to list its files, or a file to ingest it (a rerun reads them
    again); else 0."""
    if report["unread_archives"]:
        logger.error("%d archive(s) of the input could not be read to list their files (see the "
                     "errors above): their files were left as they were; run again to ingest them",
                     report["unread_archives"])  # fmt: skip
        return 1
    if report["unread_files"]:
        logger.error("%d file(s) of the input could not be read (see the errors above): nothing was recorded "
                     "of them; run again to ingest them", report["unread_files"])  # fmt: skip
        return 1
    listed = report["files"] + report["already_done"]
    if listed and report["files_in_error"] == listed:
        errors_uri = storage.join(report["output"], "errors")
        logger.error("no file of the input was ingested: all %d are set aside as errors (see %s): %s", listed,
                     errors_uri, why_set_aside(errors_uri, report["run_id"]))  # fmt: skip
        return 1
    return 0


def why_set_aside(errors_uri: str, run_id: str, shown: int = 3) -> str:
    """The reasons of the files run ``run_id`` set aside (the first ``shown``), or, when it set none aside (all
    were by earlier runs), that they are not read again: what a scheduler's log tail or a dead letter shows."""
    errors = read_folder(errors_uri, ["source", "error", "run_id"]).to_pylist()
    rows = [row for row in errors if row["run_id"] == run_id]
    if not rows:
        return "set aside by earlier runs (their reasons are in the errors table); retry_errors=true reads them again"
    reasons = "; ".join(f"{row['source']}: {row['error']}" for row in rows[:shown])
    return reasons + (f"; and {len(rows) - shown} more" if len(rows) > shown else "")


if __name__ == "__main__":
    sys.exit(exit_status(run_job(__spec__, "IngestConfig")))
