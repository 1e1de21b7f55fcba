"""Schemas of the documents, chunks, summaries, retrieval, router and errors tables."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class ColumnRule:
    """A column a table must have, and the Arrow types accepted for it."""

    name: str
    accepted: tuple[pa.DataType, ...]
    description: str

    def accepts(self, data_type: pa.DataType) -> bool:
        return any(data_type.equals(accepted) for accepted in self.accepted)


TEXT_TYPES = (pa.string(), pa.large_string())
# Binary text is accepted and decoded as UTF-8 row by row, so one bad row fails alone.
TEXT_OR_BYTES = TEXT_TYPES + (pa.binary(), pa.large_binary())

INT_TYPES = (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32())

# The columns the summarization job needs from a documents table. The ingest job writes
# more (source URI, title, pages...); extra columns are allowed and ignored. Integer ids are
# read as their decimal text; a text column null in every row has Arrow's null type (its rows
# are then set aside one by one as empty). Dictionary-encoded and view columns are checked as
# the type they hold (rayfleet.documents.plain_schema).
DOCUMENT_INPUT_COLUMNS = (
    ColumnRule("doc_id", TEXT_TYPES + INT_TYPES + (pa.uint64(),), "stable unique id of the document"),
    ColumnRule("text", TEXT_OR_BYTES + (pa.null(),), "the document's full text, UTF-8"),
)

# The columns jobs.build_index needs from a chunks table (written by the ingest job).
CHUNK_INPUT_COLUMNS = (
    ColumnRule("chunk_id", TEXT_TYPES, "stable unique id of the chunk"),
    ColumnRule("doc_id", TEXT_TYPES, "id of the document the chunk comes from"),
    ColumnRule("text", TEXT_TYPES, "the chunk's text, UTF-8"),
)
# Carried into the index when present, so answers can cite a page and filter by source.
# Each is nullable, and a column that is null in every row may have Arrow's null type.
CHUNK_OPTIONAL_COLUMNS = (
    ColumnRule("page_start", INT_TYPES + (pa.null(),), "first page of the chunk in its document"),
    ColumnRule("page_end", INT_TYPES + (pa.null(),), "last page of the chunk in its document"),
    ColumnRule("heading", TEXT_TYPES + (pa.null(),), "the section heading the chunk sits under"),
    ColumnRule("source", TEXT_TYPES + (pa.null(),), "URI of the file the document was ingested from"),
    ColumnRule("title", TEXT_TYPES + (pa.null(),), "title of the chunk's document"),
)

# One row per indexed chunk, in index order: row i is the vector with id i in the index.
INDEX_ROWS_SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("page_start", pa.int64()),
        pa.field("page_end", pa.int64()),
        pa.field("heading", pa.string()),
        pa.field("source", pa.string()),
        pa.field("title", pa.string()),  # absent in versions built before titles were indexed: read as null
        pa.field("embedding_key", pa.string(), nullable=False),
    ],
    metadata={"description": "the chunks of one index version; row i is vector id i"},
)


def embeddings_schema(dimension: int) -> pa.Schema:
    """One embedding per (model, chunk_id, text): what jobs.build_index commits batch by batch."""
    return pa.schema(
        [
            pa.field("embedding_key", pa.string(), nullable=False),
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dimension), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ],
        metadata={"description": "L2-normalized chunk embeddings keyed by model, chunk_id and text"},
    )


# Labelled prompts that jobs.train_router learns from (Parquet or JSONL).
ROUTER_EXAMPLE_COLUMNS = (
    ColumnRule("text", TEXT_TYPES, "the request's prompt"),
    ColumnRule("label", TEXT_TYPES, "the path it should take (rag, finetuned, base, or your own)"),
)

SUMMARIES_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("summary", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_fingerprint", pa.string()),
        pa.field("adapter", pa.string()),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("input_tokens", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("llm_calls", pa.int32(), nullable=False),
        pa.field("reduce_levels", pa.int32(), nullable=False),
        pa.field("finish_reason", pa.string()),
        pa.field("source", pa.string()),  # the input row's own source text (the ingested file), else its Parquet file
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"description": "one summary per input doc_id"},
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("row", pa.int64()),
        pa.field("doc_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"description": "inputs a job could not process, with the reason; the job finished the rest"},
)


def check_columns(
    schema: pa.Schema,
    rules: tuple[ColumnRule, ...],
    column_names: dict[str, str],
    settings: dict[str, str] | None = None,
) -> list[str]:
    """Problems with ``schema`` against ``rules``; empty when it is fine.

    Args:
        schema: the schema found in the file.
        rules: the required columns.
        column_names: maps a rule's name to the column name used in this table
            (jobs may read ``body`` as ``text``).
        settings: maps a rule's name to the config key that names its column (``text_column``),
            for the hint when the column is there in another case.
    """
    problems = []
    for rule in rules:
        name = column_names.get(rule.name, rule.name)
        copies = schema.names.count(name)
        if copies > 1:
            problems.append(f"column {name!r} appears {copies} times; found {schema.names}")
            continue
        if not copies:
            hint = _other_case(name, schema.names, (settings or {}).get(rule.name))
            problems.append(f"missing column {name!r} ({rule.description}); found {schema.names}{hint}")
            continue
        index = schema.get_field_index(name)
        found = schema.field(index).type
        if not rule.accepts(found):
            expected = " or ".join(str(t) for t in rule.accepted)
            problems.append(f"column {name!r} has type {found}, expected {expected}")
    return problems


def _other_case(name: str, found: list[str], setting: str | None) -> str:
    """A hint when the column is there under another case (``Text`` for ``text``): names are case-sensitive."""
    others = [column for column in found if column.lower() == name.lower()]
    if not others:
        return ""
    remedy = f"; set {setting}={others[0]}" if setting else ""
    return f" (column names are case-sensitive: {others[0]!r} is there{remedy})"
