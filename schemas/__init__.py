"""Arrow schemas for every Parquet table rayfleet reads or writes: the contracts between jobs.

Jobs validate their input with :func:`check_columns` and say exactly what is wrong
(file, column, expected type) instead of failing somewhere downstream.
"""

from schemas.tables import (
    DOCUMENT_INPUT_COLUMNS,
    ERRORS_SCHEMA,
    SUMMARIES_SCHEMA,
    ColumnRule,
    check_columns,
)

__all__ = [
    "DOCUMENT_INPUT_COLUMNS",
    "ERRORS_SCHEMA",
    "SUMMARIES_SCHEMA",
    "ColumnRule",
    "check_columns",
]
