"""Arrow schemas for every Parquet table rayfleet reads or writes: the contracts between jobs.

Jobs validate their input with :func:`check_columns` and say exactly what is wrong
(file, column, expected type) instead of failing somewhere downstream.
"""

from schemas.ingest import CHUNKS_SCHEMA, DOCUMENTS_SCHEMA, FILES_SCHEMA, HEADING_TYPE
from schemas.serving import REQUEST_LOG_SCHEMA
from schemas.qa import MESSAGE_TYPE, QA_CANDIDATES_SCHEMA, QA_SCHEMA, SFT_SCHEMA, USER_QA_OPTIONAL, USER_QA_REQUIRED
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
    "CHUNKS_SCHEMA",
    "CHUNK_INPUT_COLUMNS",
    "CHUNK_OPTIONAL_COLUMNS",
    "DOCUMENT_INPUT_COLUMNS",
    "DOCUMENTS_SCHEMA",
    "ERRORS_SCHEMA",
    "FILES_SCHEMA",
    "HEADING_TYPE",
    "MESSAGE_TYPE",
    "QA_CANDIDATES_SCHEMA",
    "QA_SCHEMA",
    "SFT_SCHEMA",
    "INDEX_ROWS_SCHEMA",
    "REQUEST_LOG_SCHEMA",
    "ROUTER_EXAMPLE_COLUMNS",
    "SUMMARIES_SCHEMA",
    "USER_QA_OPTIONAL",
    "USER_QA_REQUIRED",
    "ColumnRule",
    "check_columns",
    "embeddings_schema",
]
