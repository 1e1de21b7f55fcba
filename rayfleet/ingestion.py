"""One file in, one document and its chunks out: the plain per-file step of ingestion.

:class:`FileIngester` reads a file (a file inside a zip or tar archive from the archive,
:mod:`rayfleet.archives`), names it by the sha256 of its bytes (so the same content always
gets the same ``doc_id``, wherever it lies), parses it (:mod:`rayfleet.text.parsing`; a gzip,
bzip2 or xz file as the file inside, :mod:`rayfleet.text.compression`) and chunks it with the
model's tokenizer (:mod:`rayfleet.text.chunking`). Every outcome, good or bad, is a :class:`FileResult`
with a ledger row; bad files carry an errors-table row with the reason. A file whose read from storage
fails gets neither (``unread``): the failure is storage's, so the next run reads it again. It knows
nothing of Ray: ``jobs.ingest`` runs it in an actor pool, ``bench.ingest`` in a loop.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from pydantic import Field, model_validator

from rayfleet import storage
from rayfleet.archives import ListedFileReader
from rayfleet.assets import resolve_model
from rayfleet.config import BaseConfig
from rayfleet.tables import error_row, read_folder, utc_now
from rayfleet.text.chunking import chunk_document
from rayfleet.text.compression import decompressed
from rayfleet.text.ocr import OcrConfig
from rayfleet.text.parsing import ParseError, parse_file
from rayfleet.text.tokenizer import FastTokenizer

OUTCOME_INGESTED = "ingested"
OUTCOME_DUPLICATE = "duplicate"
OUTCOME_ERROR = "error"
OUTCOME_DELETED = "deleted"  # a ledger row for a file gone from a folder the job was given, or a missing input file
LEDGER_COLUMNS = ["source", "bytes", "modified", "doc_id", "outcome", "run_id", "created_at"]  # schemas.FILES_SCHEMA
# A file still being parsed after this long (a long scan read by OCR, a huge workbook) is named in
# the log, again every as long, so a run's log never goes quiet on one file.
PARSE_HEARTBEAT_S = 30.0

logger = logging.getLogger(__name__)


class ChunkingConfig(BaseConfig):
    """How documents are cut into chunks."""

    tokenizer: str = Field(
        "smollm2-135m-instruct", description="Model whose tokenizer measures chunks (provisioned name or folder)."
    )
    max_tokens: int = Field(256, ge=16, description="Most tokens in one chunk.")
    overlap_tokens: int = Field(32, ge=0, description="Tokens repeated between consecutive pieces of a split section.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingConfig":
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than max_tokens ({self.max_tokens})"
            )
        return self


@dataclass
class FileResult:
    """What became of one file: its ledger row, and its document and chunks or its error; or, when its read
    from storage failed, no ledger row and why (``unread``): nothing is known of the file, so nothing is
    recorded and the next run reads it again."""

    ledger: dict | None
    document: dict | None = None
    chunks: list[dict] = field(default_factory=list)
    error: dict | None = None
    unread: str | None = None


# Files an operating system or Office leaves beside documents (thumbnail caches, folder settings);
# with names starting "~$", the owner files Office writes while a document is open, and with "._", the
# AppleDouble files macOS writes beside each file copied to a volume or archive without resource forks.
SYSTEM_FILE_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", ".ds_store"}
SYSTEM_FILE_PREFIXES = ("~$", "._")


def is_system_file(uri: str) -> bool:
    """A file no one means to ingest: an Office owner (lock) file, a macOS AppleDouble file, a thumbnail
    cache, folder settings. (An upload of one such file alone, as the dispatcher submits it, is passed over
    as one met in a folder is.)"""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(SYSTEM_FILE_PREFIXES) or name.lower() in SYSTEM_FILE_NAMES


def content_id(data: bytes) -> str:
    """The stable id of a file's content: the hex sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


class FileIngester:
    """Reads, parses and chunks files; holds the tokenizer so it loads once."""

    def __init__(
        self,
        chunking: ChunkingConfig,
        max_file_bytes: int,
        run_id: str,
        ocr: OcrConfig | None = None,
        text_extensions: Collection[str] = (),
    ):
        self.chunking, self.max_file_bytes, self.run_id = chunking, max_file_bytes, run_id
        self.ocr = ocr or OcrConfig()
        self.text_extensions = frozenset(text_extensions)  # read as plain text (parse_file)
        self.tokenizer = FastTokenizer(resolve_model(chunking.tokenizer))
        self.parsed_sources: dict[str, str] = {}  # doc_id -> the file this ingester parsed it from
        self.reader = ListedFileReader()  # keeps the last archives read from open

    def ingest(self, file: storage.FileEntry, known_sources: dict[str, str]) -> FileResult:
        """Ingest one file.

        Args:
            file: the listed file.
            known_sources: ``doc_id -> source`` of documents already ingested; content
                found there is not parsed again (an exact duplicate, or this very file
                committed by a run that was stopped before its ledger row). Nor is content
                this ingester parsed from another file before (a copy met later in the run).
        """
        if file.size > self.max_file_bytes:
            return self._failed(
                file, None, "oversize", f"oversize: {file.size} bytes > max_file_bytes={self.max_file_bytes}"
            )
        try:
            data = self.reader.read(file.uri, self.max_file_bytes)
        except OSError as error:  # storage's failure (S3 down past its retries, no permission), not the file's
            logger.warning("%s could not be read: %s: %s; left for the next run", file.uri, type(error).__name__, error)
            return FileResult(None, unread=f"{type(error).__name__}: {error}")
        except ParseError as error:  # a member of an archive that is encrypted, damaged or a bomb
            return self._failed(file, None, "read", str(error))
        doc_id = content_id(data)
        holder = known_sources.get(doc_id) or self.parsed_sources.get(doc_id)
        if holder:
            outcome = OUTCOME_INGESTED if holder == file.uri else OUTCOME_DUPLICATE
            return FileResult(self._ledger(file, doc_id, outcome))
        started = time.monotonic()
        try:
            with heartbeat(f"still parsing {file.uri} ({file.size / 1e6:.1f} MB)", PARSE_HEARTBEAT_S):
                name, content, compression = decompressed(file.uri, data, self.max_file_bytes)
                parsed = parse_file(name, content, self.ocr, self.text_extensions)
        except ParseError as error:
            return self._failed(file, doc_id, "parse", str(error))
        except Exception as error:  # a parser bug on one file must not stop the run
            return self._failed(file, doc_id, "parse", f"parser failed: {type(error).__name__}: {error}")
        parse_seconds = time.monotonic() - started
        chunks = chunk_document(
            self.tokenizer, parsed.text, self.chunking.max_tokens, self.chunking.overlap_tokens,
            parsed.page_offsets, parsed.headings,
        )  # fmt: skip
        now = utc_now()
        document = {
            "doc_id": doc_id, "source": file.uri, "title": parsed.title, "text": parsed.text,
            "page_count": parsed.page_count, "page_offsets": parsed.page_offsets,
            "headings": [asdict(heading) for heading in parsed.headings], "mime_type": parsed.mime_type,
            "bytes": len(data), "parser": f"{compression}+{parsed.parser}" if compression else parsed.parser,
            "parse_seconds": parse_seconds,
            "run_id": self.run_id, "created_at": now,
        }  # fmt: skip
        chunk_rows = [
            {**asdict(chunk), "chunk_id": f"{doc_id}-{chunk.ordinal:05d}", "doc_id": doc_id, "source": file.uri,
             "title": parsed.title, "tokenizer": self.chunking.tokenizer, "run_id": self.run_id, "created_at": now}
            for chunk in chunks
        ]  # fmt: skip
        self.parsed_sources[doc_id] = file.uri
        return FileResult(self._ledger(file, doc_id, OUTCOME_INGESTED), document, chunk_rows)

    def _ledger(self, file: storage.FileEntry, doc_id: str | None, outcome: str) -> dict:
        return {"source": file.uri, "bytes": file.size, "modified": file.modified, "doc_id": doc_id,
                "outcome": outcome, "run_id": self.run_id, "created_at": utc_now()}  # fmt: skip

    def _failed(self, file: storage.FileEntry, doc_id: str | None, stage: str, reason: str) -> FileResult:
        return FileResult(
            self._ledger(file, doc_id, OUTCOME_ERROR),
            error=error_row(file.uri, reason, stage, self.run_id, doc_id=doc_id),
        )


@contextmanager
def heartbeat(message: str, every_s: float) -> Iterator[None]:
    """Log ``message`` with the time elapsed every ``every_s`` seconds until the block ends."""
    done, started = threading.Event(), time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            logger.info("%s: %.0f s so far", message, time.monotonic() - started)

    beating = threading.Thread(target=beat, name="parse-heartbeat", daemon=True)
    beating.start()
    try:
        yield
    finally:
        done.set()
        beating.join()


def table_of_ingest_output(uri: str, table: str) -> str:
    """``uri``, or its ``table`` folder (``chunks``, ``documents``) when ``uri`` is an ingest output's root
    (it holds the ``_files`` ledger and that folder): a job given ``work/corpus`` reads ``work/corpus/chunks``,
    not every table under it (chunks summarized as documents, a documents file set aside as a bad chunks
    table)."""
    folder = storage.join(uri, table)
    if storage.exists(storage.join(uri, "_files")) and storage.exists(folder):
        logger.info("%s is an ingest output: reading its %s table, %s", uri, table, folder)
        return folder
    return uri


def ingest_ledger_beside(table_uri: str) -> str | None:
    """The ``_files`` ledger of the ingest output whose table (``chunks``, ``documents``) ``table_uri`` is,
    if there is one."""
    parent = table_uri.rstrip("/").rsplit("/", 1)[0]
    ledger = storage.join(parent, "_files")
    return ledger if parent and storage.exists(ledger) else None


def superseded_beside(table_uri: str) -> set[str]:
    """The superseded documents (:func:`superseded_documents`) of the ingest output whose table
    (``chunks``, ``documents``) ``table_uri`` is; none when it has no ledger (written by something else)."""
    ledger = ingest_ledger_beside(table_uri)
    return superseded_documents(read_folder(ledger, LEDGER_COLUMNS).to_pylist()) if ledger else set()


def superseded_documents(ledger: list[dict]) -> set[str]:
    """The documents no file holds any more: a file ingested again after it changed has a new ``doc_id``
    (the content's hash), and its earlier versions are superseded; a deleted file holds none. ``ledger``
    rows are the ``_files`` table's (:data:`LEDGER_COLUMNS`); a file's current document is that of its
    latest row that read it (ingested or duplicate), none after a ``deleted`` row. A file that fails to
    parse after a change keeps its last good version (its error is in the errors table)."""
    seen = {
        row["doc_id"] for row in ledger if row["outcome"] in (OUTCOME_INGESTED, OUTCOME_DUPLICATE) and row["doc_id"]
    }
    return seen - set(current_files(ledger).values())


def current_files(ledger: list[dict]) -> dict[str, str]:
    """Each file that holds a document now, and that document (``source -> doc_id``; see
    :func:`superseded_documents`)."""
    current: dict[str, str] = {}
    for row in in_ledger_order(ledger):
        if row["outcome"] == OUTCOME_DELETED:
            current.pop(row["source"], None)
        elif row["outcome"] in (OUTCOME_INGESTED, OUTCOME_DUPLICATE) and row["doc_id"]:
            current[row["source"]] = row["doc_id"]
    return current


def files_behind(ledger: list[dict]) -> list[str]:
    """The files whose latest read failed while an earlier version of theirs is current: what they hold now
    is not what is served (their last good version is), sorted."""
    current = current_files(ledger)
    return sorted(
        source for source, row in latest_rows(ledger).items() if row["outcome"] == OUTCOME_ERROR and source in current
    )


def document_holders(current: dict[str, str]) -> dict[str, str]:
    """For each document some file holds now (``current``: :func:`current_files`), the first such file
    by name: where to cite it from once the file it was read from is renamed, changed or deleted while
    another holds the same bytes."""
    holders: dict[str, str] = {}
    for source, doc_id in sorted(current.items()):
        holders.setdefault(doc_id, source)
    return holders


def latest_rows(ledger: list[dict]) -> dict[str, dict]:
    """Each file's latest ledger row."""
    return {row["source"]: row for row in in_ledger_order(ledger)}


def in_ledger_order(ledger: list[dict]) -> list[dict]:
    """Ledger rows oldest first (by ``created_at``, then ``run_id``)."""
    return sorted(ledger, key=lambda row: (row["created_at"], row["run_id"]))
