"""Planning and reading a documents dataset (Parquet, local or S3) for batch jobs.

:func:`plan_input` looks at every file once, cheaply (footer and id column only): it
sets aside unreadable files, files with missing or mistyped columns, rows without an
id and repeated ids, each with a reason, and skips ids already done by an earlier run.
What remains is a list of :class:`WorkItem` (a row group, or a run of small consecutive ones
read together, and the rows to take from it)
that :func:`read_work_item` streams, a slice at a time, as validated ``(doc_id, text)``
rows (with the row's own ``source`` when the file has that text column, as ``jobs.ingest``'s
documents do: the file the document was ingested from), setting aside empty and non-UTF-8
texts; a row group that fails to decode part-way sets aside the rows not yet read instead of
failing the run.

Column types as writers produce them are read as text: ids may be strings or integers,
and either column may be dictionary-encoded (a pandas ``category``) or a string view (Polars);
a text column null in every row has Arrow's null type and gives one "empty" error per row.
"""

from __future__ import annotations

import logging
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rayfleet import storage
from rayfleet.tables import error_row
from schemas import DOCUMENT_INPUT_COLUMNS, check_columns

logger = logging.getLogger(__name__)

PLAN_THREADS = 8
# A text column carried along with each row when a file has it: where the document came from.
DOCUMENT_SOURCE_COLUMN = "source"


@dataclass(frozen=True)
class WorkItem:
    """Rows to process from consecutive row groups of one file (row numbers are file-wide)."""

    source: str
    row_groups: tuple[int, ...]
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
    left_out: int = 0  # rows whose id the caller said to leave out (superseded versions)

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
        schema = plain_schema(parquet.schema_arrow)
        columns, settings = {"doc_id": id_column, "text": text_column}, {"doc_id": "id_column", "text": "text_column"}
        problems = check_columns(schema, DOCUMENT_INPUT_COLUMNS, columns, settings)
        if problems:
            found.problem = "; ".join(problems)
            return found
        ids = pc.cast(parquet.read(columns=[id_column]).column(0), pa.string()).to_pylist()
        first_row = 0
        for index in range(parquet.num_row_groups):
            group_rows = parquet.metadata.row_group(index).num_rows
            found.row_groups.append((first_row, ids[first_row : first_row + group_rows]))
            first_row += group_rows
    except Exception as error:  # any failure to read is this file's error, not the run's
        found.problem = f"unreadable Parquet file: {type(error).__name__}: {error}"
    return found


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary-encoded and view columns shown as the plain type they hold."""
    return pa.schema([field.with_type(plain_type(field.type)) for field in schema])


def plain_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with dictionary-encoded and view columns decoded to the plain type they hold."""
    columns = [pc.cast(column, plain_type(column.type)) for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def plain_type(data_type: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(data_type):
        return plain_type(data_type.value_type)
    if pa.types.is_string_view(data_type):
        return pa.string()
    if pa.types.is_binary_view(data_type):
        return pa.binary()
    return data_type


def plan_input(
    sources: list[str],
    id_column: str,
    text_column: str,
    done_ids: set[str],
    run_id: str,
    item_rows: int = 256,
    left_out: set[str] = frozenset(),
) -> InputPlan:
    """Decide which rows of the Parquet files ``sources`` (``storage.list_parquet_files`` of the input) this
    run processes: not those whose id is in ``done_ids`` (counted as already done) or ``left_out``.

    The first occurrence of an id wins (files in sorted order); later ones are errors,
    so the output holds exactly one row per id. Consecutive row groups of a file that span
    at most ``item_rows`` rows together make one work item, opened and read once (a file
    written row by row has a row group per row).
    """
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
                    plan.errors.append(
                        error_row(
                            found.source, f"duplicate {id_column} (first at {where})", "validate", run_id, row, doc_id
                        )
                    )
                else:
                    first_seen[doc_id] = (found.source, row)
                    if doc_id in left_out:
                        plan.left_out += 1
                    elif doc_id in done_ids:
                        plan.already_done += 1
                    else:
                        rows.append(row)
            if rows:
                _add_rows(plan.items, WorkItem(found.source, (group_index,), first_row, tuple(rows)), item_rows)
    return plan


def _add_rows(items: list[WorkItem], item: WorkItem, item_rows: int) -> None:
    """Append one row group's item, or join it to the last item when that ends with the group just
    before it in the same file and both span at most ``item_rows`` rows together."""
    last = items[-1] if items else None
    if (last is not None and last.source == item.source and last.row_groups[-1] + 1 == item.row_groups[0]
            and item.rows[-1] - last.first_row < item_rows):  # fmt: skip
        items[-1] = WorkItem(last.source, last.row_groups + item.row_groups, last.first_row, last.rows + item.rows)
    else:
        items.append(item)


def decode_texts(column: pa.ChunkedArray | pa.Array) -> list[str | None | UnicodeDecodeError]:
    """Decode a text column strictly as UTF-8, row by row; a bad row yields its error."""
    as_bytes = column if pa.types.is_large_binary(column.type) else pc.cast(column, pa.large_binary())
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


def read_work_item(
    item: WorkItem, id_column: str, text_column: str, run_id: str, slice_rows: int = 256
) -> Iterator[tuple[list[dict], list[dict]]]:
    """Stream the rows of one work item, ``slice_rows`` rows of its row groups at a time.

    Yields:
        ``(rows, errors)`` per slice: rows as ``{doc_id, text, source, row, document_source}`` dicts
        (``source``: the Parquet file; ``document_source``: the row's own ``source`` text, None when the file
        has no such column), and error
        rows for texts that are null, empty or not valid UTF-8. If the row group fails to
        read part-way (damaged data, a file changed since planning), the rows not yet read
        come back as errors with the reason, and the item ends there.
    """
    wanted, pending = set(item.rows), set(item.rows)
    try:
        parquet = _open(item.source)
        carried = carried_columns(parquet.schema_arrow, id_column, text_column)
        columns = [id_column, text_column, *carried]
        batches = parquet.iter_batches(slice_rows, row_groups=list(item.row_groups), columns=columns)
        position = item.first_row
        for batch in batches:
            taken = [row for row in range(position, position + batch.num_rows) if row in wanted]
            if taken:
                local = pa.array([row - position for row in taken], pa.int64())
                slice_ = plain_batch(batch).take(local)
                yield _validated(slice_, taken, item.source, id_column, text_column, run_id, bool(carried))
                pending.difference_update(taken)
            position += batch.num_rows
            if not pending:
                return
    except Exception as error:  # one damaged file must not stop the run: its unread rows are set aside
        groups = _single_groups(item, pending) if len(item.row_groups) > 1 else None
        if groups:  # a damaged group read with others: each read alone, so only its own rows are lost
            for group in groups:
                yield from read_work_item(group, id_column, text_column, run_id, slice_rows)
            return
        reason = f"unreadable Parquet data: {type(error).__name__}: {error}"
        yield [], [error_row(item.source, reason, "read", run_id, row) for row in sorted(pending)]


def _single_groups(item: WorkItem, pending: set[int]) -> list[WorkItem] | None:
    """The ``pending`` rows of a multi-group item as one item per row group; None when the footer no longer reads."""
    try:
        metadata = _open(item.source).metadata
    except Exception:  # the file changed or went away since planning: its rows are set aside together
        return None
    groups, first_row = [], item.first_row
    for group in item.row_groups:
        end = first_row + metadata.row_group(group).num_rows
        rows = tuple(row for row in sorted(pending) if first_row <= row < end)
        if rows:
            groups.append(WorkItem(item.source, (group,), first_row, rows))
        first_row = end
    return groups


def carried_columns(schema: pa.Schema, id_column: str, text_column: str) -> list[str]:
    """The columns read along with id and text: :data:`DOCUMENT_SOURCE_COLUMN` where it holds text."""
    name = DOCUMENT_SOURCE_COLUMN
    index = schema.get_field_index(name)
    if name in (id_column, text_column) or index < 0:
        return []
    return [name] if plain_type(schema.field(index).type) in (pa.string(), pa.large_string()) else []


def _validated(
    slice_: pa.RecordBatch,
    rows: list[int],
    source: str,
    id_column: str,
    text_column: str,
    run_id: str,
    carried: bool,
) -> tuple[list[dict], list[dict]]:
    """The slice's rows with a usable text, and an error row for each of the others (``carried``: the slice
    holds :data:`DOCUMENT_SOURCE_COLUMN`, as :func:`carried_columns` chose)."""
    ids = pc.cast(slice_.column(id_column), pa.string()).to_pylist()
    document_sources = slice_.column(DOCUMENT_SOURCE_COLUMN).to_pylist() if carried else [None] * len(rows)
    found, errors = [], []
    for row, doc_id, text, document_source in zip(
        rows, ids, decode_texts(slice_.column(text_column)), document_sources
    ):
        if isinstance(text, UnicodeDecodeError):
            errors.append(
                error_row(source, f"{text_column!r} is not valid UTF-8: {text}", "validate", run_id, row, doc_id)
            )
        elif text is None or is_blank(text):
            errors.append(error_row(source, f"empty {text_column!r}", "validate", run_id, row, doc_id))
        else:
            found.append(
                {"doc_id": doc_id, "text": text, "source": source, "row": row, "document_source": document_source}
            )
    return found, errors


# Unicode categories that show nothing: control characters (NUL, escape, ...), format characters
# (zero-width space and joiners, byte order mark, direction marks) and separators.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """No visible character at all (the first visible one ends the scan)."""
    return all(char.isspace() or unicodedata.category(char) in INVISIBLE_CATEGORIES for char in text)
