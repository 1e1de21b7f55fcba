"""Planning and reading a documents dataset (Parquet, local or S3) for batch jobs.

:func:`plan_input` looks at every file once, cheaply (footer and id column only): it
sets aside unreadable files, files with missing or mistyped columns, rows without an
id and repeated ids, each with a reason, and skips ids already done by an earlier run.
What remains is a list of :class:`WorkItem` (a row group and the rows to take from it)
that :func:`read_work_item` turns into validated ``(doc_id, text)`` rows, setting aside
empty and non-UTF-8 texts.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rayfleet import storage
from rayfleet.tables import error_row
from schemas import DOCUMENT_INPUT_COLUMNS, check_columns

logger = logging.getLogger(__name__)

PLAN_THREADS = 8


@dataclass(frozen=True)
class WorkItem:
    """Rows to process from one row group of one file (row numbers are file-wide)."""

    source: str
    row_group: int
    first_row: int
    rows: tuple[int, ...]


@dataclass
class InputPlan:
    """What a run will do, and what it set aside."""

    items: list[WorkItem] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    files: int = 0
    total_rows: int = 0
    already_done: int = 0

    @property
    def todo_rows(self) -> int:
        return sum(len(item.rows) for item in self.items)


@dataclass
class _FileIds:
    source: str
    problem: str | None = None
    row_groups: list[tuple[int, list]] = field(default_factory=list)  # (first_row, ids)


def _open(source: str) -> pq.ParquetFile:
    location = storage.resolve(source)
    return pq.ParquetFile(location.filesystem.open_input_file(location.path))


def _read_ids(source: str, id_column: str, text_column: str) -> _FileIds:
    """The id column of one file, by row group, or the reason the file cannot be used."""
    found = _FileIds(source)
    try:
        parquet = _open(source)
        problems = check_columns(parquet.schema_arrow, DOCUMENT_INPUT_COLUMNS, {"doc_id": id_column, "text": text_column})
        if problems:
            found.problem = "; ".join(problems)
            return found
        first_row = 0
        for index in range(parquet.num_row_groups):
            ids = parquet.read_row_group(index, columns=[id_column]).column(0).to_pylist()
            found.row_groups.append((first_row, ids))
            first_row += len(ids)
    except Exception as error:  # any failure to read is this file's error, not the run's
        found.problem = f"unreadable Parquet file: {type(error).__name__}: {error}"
    return found


def plan_input(input_uri: str, id_column: str, text_column: str, done_ids: set[str], run_id: str) -> InputPlan:
    """Decide which rows of ``input_uri`` this run processes.

    The first occurrence of an id wins (files in sorted order); later ones are errors,
    so the output holds exactly one row per id.

    Raises:
        FileNotFoundError: nothing exists at ``input_uri``.
        ValueError: it holds no Parquet file.
    """
    sources = storage.list_parquet_files(input_uri)
    with ThreadPoolExecutor(PLAN_THREADS) as pool:
        per_file = list(pool.map(lambda source: _read_ids(source, id_column, text_column), sources))
    plan = InputPlan(files=len(sources))
    first_seen: dict[str, tuple[str, int]] = {}
    for found in per_file:
        if found.problem:
            plan.errors.append(error_row(found.source, found.problem, "schema", run_id))
            continue
        for group_index, (first_row, ids) in enumerate(found.row_groups):
            rows = []
            for offset, doc_id in enumerate(ids):
                row = first_row + offset
                plan.total_rows += 1
                if doc_id is None or not str(doc_id).strip():
                    plan.errors.append(error_row(found.source, f"empty {id_column!r}", "validate", run_id, row))
                elif doc_id in first_seen:
                    where = "%s row %d" % first_seen[doc_id]
                    plan.errors.append(error_row(found.source, f"duplicate {id_column} (first at {where})", "validate", run_id, row, doc_id))
                else:
                    first_seen[doc_id] = (found.source, row)
                    if doc_id in done_ids:
                        plan.already_done += 1
                    else:
                        rows.append(row)
            if rows:
                plan.items.append(WorkItem(found.source, group_index, first_row, tuple(rows)))
    return plan


def split_item(item: WorkItem, max_rows: int) -> list[WorkItem]:
    """Split a work item so no task reads more than ``max_rows`` rows (spreads big row groups)."""
    return [
        WorkItem(item.source, item.row_group, item.first_row, item.rows[start : start + max_rows])
        for start in range(0, len(item.rows), max_rows)
    ]


def decode_texts(column: pa.ChunkedArray | pa.Array) -> list[str | None | UnicodeDecodeError]:
    """Decode a text column strictly as UTF-8, row by row; a bad row yields its error."""
    as_bytes = pc.cast(column, pa.large_binary()) if not pa.types.is_large_binary(column.type) else column
    decoded: list = []
    for value in as_bytes.to_pylist():
        if value is None:
            decoded.append(None)
            continue
        try:
            decoded.append(value.decode("utf-8"))
        except UnicodeDecodeError as error:
            decoded.append(error)
    return decoded


def read_work_item(item: WorkItem, id_column: str, text_column: str, run_id: str) -> tuple[list[dict], list[dict]]:
    """Read and validate the rows of one work item.

    Returns:
        ``(rows, errors)``: rows as ``{doc_id, text, source, row}`` dicts, and error rows
        for texts that are null, empty or not valid UTF-8.
    """
    group = _open(item.source).read_row_group(item.row_group, columns=[id_column, text_column])
    local_rows = pa.array([row - item.first_row for row in item.rows], pa.int64())
    group = group.take(local_rows)
    ids = group.column(id_column).to_pylist()
    rows, errors = [], []
    for row, doc_id, text in zip(item.rows, ids, decode_texts(group.column(text_column))):
        if isinstance(text, UnicodeDecodeError):
            errors.append(error_row(item.source, f"{text_column!r} is not valid UTF-8: {text}", "validate", run_id, row, doc_id))
        elif text is None or not text.strip():
            errors.append(error_row(item.source, f"empty {text_column!r}", "validate", run_id, row, doc_id))
        else:
            rows.append({"doc_id": doc_id, "text": text, "source": item.source, "row": row})
    return rows, errors
