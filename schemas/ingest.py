"""Schemas of the ingestion tables: documents, chunks and the files ledger.

The documents table is a superset of :data:`schemas.tables.DOCUMENT_INPUT_COLUMNS`
(``doc_id``, ``text``), so ``jobs.summarize`` reads it as it is.
"""

from __future__ import annotations

import pyarrow as pa

HEADING_TYPE = pa.struct([("offset", pa.int64()), ("level", pa.int32()), ("title", pa.string())])

DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),  # sha256 of the file's bytes
        pa.field("source", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("page_count", pa.int32(), nullable=False),  # 1 for formats without pages
        pa.field("page_offsets", pa.list_(pa.int64()), nullable=False),  # character offset where each page starts
        pa.field("headings", pa.list_(HEADING_TYPE), nullable=False),
        pa.field("mime_type", pa.string(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("parser", pa.string(), nullable=False),
        pa.field("parse_seconds", pa.float64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"description": "one row per distinct file content (exact duplicates removed)"},
)

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),  # <doc_id>-<ordinal>
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("ordinal", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("token_count", pa.int32(), nullable=False),
        pa.field("page_start", pa.int32(), nullable=False),  # 1-based, inclusive
        pa.field("page_end", pa.int32(), nullable=False),
        pa.field("heading", pa.string()),  # the section heading in effect where the chunk starts
        pa.field("source", pa.string()),  # the document's file (its first copy), for citations and filters
        pa.field("title", pa.string()),  # the document's title, so a passage can be named to a reader
        pa.field("char_start", pa.int64(), nullable=False),  # span of the chunk in the document text
        pa.field("char_end", pa.int64(), nullable=False),
        pa.field("tokenizer", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"description": "token-bounded pieces of each document, in order"},
)

FILES_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("modified", pa.string(), nullable=False),  # as listed by the filesystem, ISO 8601
        pa.field("doc_id", pa.string()),  # null when the file could not be read
        pa.field("outcome", pa.string(), nullable=False),  # ingested | duplicate | error | deleted
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"description": "ledger of every input file an ingest run has handled; reruns skip these"},
)
