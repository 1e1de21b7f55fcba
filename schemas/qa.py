"""Schemas of the Q&A tables: generated candidates, the held-out QA set and the chat-format SFT set."""

from __future__ import annotations

import pyarrow as pa

QA_CANDIDATES_SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("question", pa.string()),  # null when the output held no pair at all
        pa.field("answer", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # valid | dropped
        pa.field("reason", pa.string()),  # why it was dropped: unparseable, question_length, ungrounded, ...
        pa.field("detail", pa.string()),  # the reason in words, with the figures
        pa.field("raw_output", pa.string()),  # the model's text, kept for unparseable outputs only
        pa.field("model", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"description": "every question-answer pair the model proposed for a chunk, kept or dropped, with why"},
)

QA_SCHEMA = pa.schema(
    [
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("chunk_id", pa.string()),  # null for user-written pairs that name no chunk
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),  # generated | user
        pa.field("split", pa.string(), nullable=False),  # train | validation | test
    ],
    metadata={"description": "question-answer pairs with their source chunk and document"},
)

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

SFT_SCHEMA = pa.schema(
    [
        pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
        pa.field("chunk_id", pa.string()),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
    ],
    metadata={"description": "chat-format supervised fine-tuning examples (system, user, assistant)"},
)

# What a user-written Q&A file (JSONL or Parquet) must hold, per row.
USER_QA_REQUIRED = ("question", "answer", "doc_id")
USER_QA_OPTIONAL = ("chunk_id",)
