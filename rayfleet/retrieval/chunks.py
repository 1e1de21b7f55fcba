"""Reading a chunks table (the ingest job's output) for indexing, setting bad rows aside.

Each file is checked against ``schemas.CHUNK_INPUT_COLUMNS``; a file that does not fit
goes to the errors table whole, with the reason. Rows with an empty ``chunk_id`` or
empty ``text``, and repeats of a ``chunk_id`` already seen, go there one by one. The
optional columns (pages, heading, source, title) are carried when present and null otherwise.
A file listed that is gone by the time it is read (an ingest run merging its batch files) makes
the folder be listed again, so its rows, now in the merged file, are not missed.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from rayfleet import storage
from rayfleet.tables import error_row, read_relisting, read_table
from schemas import CHUNK_INPUT_COLUMNS, CHUNK_OPTIONAL_COLUMNS, check_columns

CHUNK_COLUMNS = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("doc_id", pa.string()),
        ("text", pa.large_string()),
        ("page_start", pa.int64()),
        ("page_end", pa.int64()),
        ("heading", pa.string()),
        ("source", pa.string()),
        ("title", pa.string()),
    ]
)


def read_chunks(input_uri: str, run_id: str) -> tuple[pa.Table, list[dict]]:
    """The valid chunks of every Parquet file at ``input_uri`` and the error rows of the rest.

    Raises:
        FileNotFoundError: nothing exists at ``input_uri``.
        NoParquetFilesError: it holds no Parquet file.
    """
    return read_relisting(
        lambda: storage.list_parquet_files(input_uri), lambda sources: _read_listed(sources, run_id), "the chunks"
    )


def _read_listed(sources: list[str], run_id: str) -> tuple[pa.Table, list[dict]]:
    """:func:`read_chunks` of the files listed.

    Raises:
        FileNotFoundError: a file listed is gone.
    """
    rows, errors, seen = [], [], {}
    for source in sources:
        table, problem = _read_file(source)
        if problem:
            errors.append(error_row(source, problem, "schema", run_id))
            continue
        for row, chunk in enumerate(table.to_pylist()):
            reason = _row_problem(chunk, seen)
            if reason:
                errors.append(error_row(source, reason, "validate", run_id, row, chunk["doc_id"]))
                continue
            seen[chunk["chunk_id"]] = (source, row)
            if chunk["source"] is None:
                chunk["source"] = source
            rows.append(chunk)
    return pa.Table.from_pylist(rows, schema=CHUNK_COLUMNS), errors


def _read_file(source: str) -> tuple[pa.Table | None, str | None]:
    try:
        table = read_table(source)
    except FileNotFoundError:
        raise
    except Exception as error:  # any other failure to read is this file's error, not the run's
        return None, f"unreadable Parquet file: {type(error).__name__}: {error}"
    problems = check_columns(table.schema, CHUNK_INPUT_COLUMNS, {})
    present = tuple(rule for rule in CHUNK_OPTIONAL_COLUMNS if rule.name in table.schema.names)
    problems += check_columns(table.schema, present, {})
    if problems:
        return None, "; ".join(problems)
    columns = {
        field.name: (
            table[field.name].cast(field.type)
            if field.name in table.schema.names
            else pa.nulls(table.num_rows, field.type)
        )
        for field in CHUNK_COLUMNS
    }
    return pa.table(columns, schema=CHUNK_COLUMNS), None


def _row_problem(chunk: dict, seen: dict) -> str | None:
    if not chunk["chunk_id"] or not chunk["chunk_id"].strip():
        return "empty 'chunk_id'"
    if not chunk["doc_id"] or not chunk["doc_id"].strip():
        return "empty 'doc_id'"
    if chunk["text"] is None or not chunk["text"].strip():
        return f"empty chunk text (chunk_id {chunk['chunk_id']!r})"
    if chunk["chunk_id"] in seen:
        return f"duplicate chunk_id {chunk['chunk_id']!r} (first at %s row %d)" % seen[chunk["chunk_id"]]
    return None


def embedding_keys(chunks: pa.Table, model_hash: str) -> list[str]:
    """One key per chunk: a hash of the embedding model, the chunk_id and the text.

    Equal key, equal embedding: a rerun embeds only chunks that are new or whose text
    (or the model) changed.
    """
    return [
        hashlib.sha256(f"{model_hash}\0{chunk_id}\0{text}".encode()).hexdigest()[:32]
        for chunk_id, text in zip(chunks["chunk_id"].to_pylist(), chunks["text"].to_pylist())
    ]


def chunks_version(chunks: pa.Table, keys: list[str]) -> str:
    """A hash of everything the index holds about the chunks: equal means an unchanged input."""
    digest = hashlib.sha256()
    metadata = zip(
        keys, *(chunks[name].to_pylist() for name in ("doc_id", "page_start", "page_end", "heading", "source", "title"))
    )
    for record in sorted(metadata, key=lambda values: values[0]):
        digest.update(repr(record).encode())
    return digest.hexdigest()[:32]
