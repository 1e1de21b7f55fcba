"""Arrow schemas for every Parquet table rayfleet reads or writes: the contracts between jobs.

Jobs validate their input with :func:`check_columns` and say exactly what is wrong
(file, column, expected type) instead of failing somewhere downstream.
"""

from schemas.tables import (
    CHUNK_INPUT_COLUMNS,
    CHUNK_OPTIONAL_COLUMNS,
    DOCUMENT_INPUT_COLUMNS,
    ERRORS_SCHEMA,
    INDEX_ROWS_SCHEMA,
    ROUTER_EXAMPLE_COLUMNS,
    SUMMARIES_SCHEMA,
    ColumnRule,
    check_columns,
    embeddings_schema,
)

__all__ = [
    "CHUNK_INPUT_COLUMNS",
    "CHUNK_OPTIONAL_COLUMNS",
    "DOCUMENT_INPUT_COLUMNS",
    "ERRORS_SCHEMA",
    "INDEX_ROWS_SCHEMA",
    "ROUTER_EXAMPLE_COLUMNS",
    "SUMMARIES_SCHEMA",
    "ColumnRule",
    "check_columns",
    "embeddings_schema",
]
