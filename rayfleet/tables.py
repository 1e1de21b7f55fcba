"""Parquet tables in storage: atomic writes, tolerant reads, the errors table.

Each write is one whole file under a unique name (atomic through :mod:`rayfleet.storage`),
so a table is a folder of complete files; :func:`compact_output` merges small ones into new files, then
deletes them, so a reader sees every row at least once: a run's own batch files at its end
(:func:`compact_run_files`), and the small files many short runs leave, by size tier
(:func:`compact_folder`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import logging
import math
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Collection, Iterable, Iterator, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from rayfleet import storage
from rayfleet.config import InputError
from schemas import ERRORS_SCHEMA

logger = logging.getLogger(__name__)
READ_THREADS = 8  # files of a folder read at once (each read waits on storage, ~4 ms per small S3 object)
RELISTS = 3  # listings read again when a file listed is gone (merged into another by the run that wrote it)
Read = TypeVar("Read")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id() -> str:
    """A sortable, unique id for one run of a job."""
    return f"{utc_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def write_table(uri: str, table: pa.Table) -> None:
    """Write ``table`` as one Parquet file at ``uri``, atomically."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(uri, buffer.getvalue())


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file.

    Raises:
        InputError: the file is not Parquet, or is damaged (named, with Arrow's reason).
    """
    location = storage.resolve(uri)
    with readable_parquet(uri):
        return pq.read_table(location.path, filesystem=location.filesystem, columns=columns)


def read_schema(uri: str) -> pa.Schema:
    """The schema of one Parquet file (its footer only); :class:`InputError` as :func:`read_table`."""
    location = storage.resolve(uri)
    with readable_parquet(uri):
        return pq.read_schema(location.path, filesystem=location.filesystem)


@contextlib.contextmanager
def readable_parquet(uri: str) -> Iterator[None]:
    """Arrow's refusal of a file that is not Parquet, or is damaged, as an :class:`InputError` naming it."""
    try:
        yield
    except pa.ArrowInvalid as error:
        raise InputError(f"{uri} is not a readable Parquet file ({error})") from error


def read_folder(folder_uri: str, columns: list[str]) -> pa.Table:
    """``columns`` of every Parquet file under ``folder_uri``, concatenated (empty if none). A file
    without them all is not one of ours (someone else's file in the folder): skipped, with a warning."""
    if not storage.exists(folder_uri):
        return pa.table({column: pa.array([], pa.null()) for column in columns})
    files = storage.list_files(folder_uri, suffixes=(".parquet",))
    tables = [table for table in _read_all_if_ours(files, columns) if table is not None]
    if not tables:
        return pa.table({column: pa.array([], pa.null()) for column in columns})
    return pa.concat_tables(tables, promote_options="permissive")


def read_input_folder(
    uri: str,
    required: Iterable[str],
    optional: Iterable[str] = (),
    per_file: Callable[[pa.Table], pa.Table] | None = None,
    hint: Callable[[list[str]], str] = lambda names: "",
) -> pa.Table:
    """A user's Parquet input (one file or a folder/prefix; every Parquet naming that
    :func:`storage.list_parquet_files` finds): ``required`` columns, plus each ``optional`` column,
    null in files that lack it. Files written by different tools or versions may differ in
    their other columns and in their timestamps' time zones (all read as UTC); ``per_file`` brings
    each file's columns to the types the caller takes, before the files are combined. ``hint`` says, from
    the columns a refused file has, what it seems to be instead (``""`` for nothing).

    Raises:
        FileNotFoundError: nothing at ``uri``.
        NoParquetFilesError: no Parquet file there.
        InputError: a file lacks a required column (named, with the columns it has), or is no readable Parquet.
    """
    required, optional = list(required), list(optional)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no Parquet input at {uri}")
    tables = []
    for file_uri in storage.list_parquet_files(uri):
        location = storage.resolve(file_uri)
        with readable_parquet(file_uri):
            parquet = pq.ParquetFile(location.filesystem.open_input_file(location.path))  # the footer, read once
        names = parquet.schema_arrow.names
        missing = [column for column in required if column not in names]
        if missing:
            raise InputError(f"{file_uri} lacks column(s) {missing}; it has {names}{hint(names)}")
        table = parquet.read(columns=required + [column for column in optional if column in names])
        for column in optional:
            if column not in names:
                table = table.append_column(column, pa.nulls(table.num_rows))
        table = plain_columns(utc_timestamps(table.select(required + optional)))
        try:
            tables.append(per_file(table) if per_file else table)
        except InputError as error:
            raise InputError(f"{file_uri}: {error}") from None
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        raise InputError(f"the files at {uri} disagree on column types: {disagreements(tables)}") from None


def plain_columns(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary-encoded columns (pandas' ``category``) decoded, so that they combine
    with the same column written plainly by another file."""
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(index, field.name, pc.cast(table.column(index), field.type.value_type))
    return table


def disagreements(tables: list[pa.Table]) -> str:
    """The columns whose type differs between the files' ``tables``, each with the types found."""
    types: dict[str, set[str]] = {}
    for table in tables:
        for field in table.schema:
            if not pa.types.is_null(field.type):
                types.setdefault(field.name, set()).add(str(field.type))
    differing = {name: sorted(found) for name, found in types.items() if len(found) > 1}
    return "; ".join(f"{name!r} is {' in some, '.join(found)} in others" for name, found in differing.items())


def utc_timestamps(table: pa.Table) -> pa.Table:
    """``table`` with every time-zone-aware timestamp column in UTC microseconds: files written by other
    tools (``Europe/Berlin``, milliseconds) then combine with ours."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            table = table.set_column(index, field.name, table.column(index).cast(pa.timestamp("us", tz="UTC")))
    return table


def read_column_values(folder_uri: str, column: str, signature: Iterable[str] = ()) -> set[str]:
    """Every value of ``column`` across the Parquet files of the output folder ``folder_uri`` (its
    own files: a job writes no subfolder there, so a copy a user keeps in one is not counted).

    A Parquet file without ``column`` or any of the ``signature`` columns (the ones only the job's
    own files have: not one of ours, someone else's file in the folder) is skipped with a warning
    and left alone.

    Raises:
        OSError: a file that does not read, named, so nothing is done twice or lost on a guess.
    """
    if not storage.exists(folder_uri):
        return set()
    values: set[str] = set()
    files = storage.list_files(folder_uri, suffixes=(".parquet",), recursive=False)
    for table in _read_all_if_ours(files, [column], signature):
        if table is not None:
            values.update(v for v in table.column(column).to_pylist() if v)
    return values


MERGED_FILE_BYTES = 64 * 2**20  # merged files' size: a group is held in memory while it is written


def output_file_bytes_field(files: str = "files") -> Any:
    """A job's ``output_file_bytes`` setting: how large the merged ``files`` of a run grow."""
    return Field(
        MERGED_FILE_BYTES,
        ge=0,
        description=f"At the end of a run the {files} it committed (one per batch) are merged into files of up to "
        "about this size (a merge is held in memory); 0: none merged.",
    )


def compact_run_files(folder_uri: str, run_id: str, file_bytes: int = MERGED_FILE_BYTES) -> int:
    """Merge the files one run committed to an output folder (``part-<run_id>-*.parquet``, a file per
    batch) into files of up to about ``file_bytes`` (0: none merged); returns how many files it removed.

    Only the run's own files, only into new files: no other run writes or merges them, and no file
    another run may be reading is changed. A merged file is named to sort before the files it
    merges, so a concurrent :func:`drop_duplicate_ids` keeps its copy of a row; killed before the
    sources are deleted, the rows are there twice until the next run's pass, never gone.
    """
    if not file_bytes or not storage.exists(folder_uri):
        return 0
    batch_files, merged_files = f"part-{run_id}-", f"part-{run_id}--"  # merges sort first and are not merged again
    files = [entry for entry in storage.list_entries(folder_uri, suffixes=(".parquet",), recursive=False)
             if _name(entry.uri).startswith(batch_files) and not _name(entry.uri).startswith(merged_files)]  # fmt: skip
    removed = 0
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for group in _groups_up_to([(entry.uri, entry.size) for entry in files], file_bytes):
            merged_uri = storage.join(folder_uri, f"{merged_files}merged-{uuid.uuid4().hex[:12]}.parquet")
            write_table(merged_uri, pa.concat_tables(pool.map(read_table, group), promote_options="permissive"))
            for file_uri in group:
                storage.delete(file_uri)
            removed += len(group) - 1
    if removed:
        logger.info(
            "merged run %s's %d batch files in %s into %d", run_id, len(files), folder_uri, len(files) - removed
        )
    return removed


COMPACT_FAN_IN = 16  # small files of one size tier merged once there are this many: a row is rewritten ~log16 times
SMALLEST_TIER_BYTES = 2**20  # files under this size are all of the first tier
# A file a run of ours wrote: part-<run id>-<batch hex>, or a merge of such files (dashes, then hex or "merged-hex").
OUR_FILE = re.compile(r"part-(?P<run>\d{8}T\d{6}Z-[0-9a-f]{8})-(?P<dashes>-*)(merged-)?[0-9a-f]+\.parquet")


def compact_output(folder_uri: str, run_id: str, file_bytes: int = MERGED_FILE_BYTES) -> int:
    """At the end of a run: its own batch files merged (:func:`compact_run_files`), then the folder's small
    files of every run, tier by tier (:func:`compact_folder`); returns how many files fewer there are."""
    return compact_run_files(folder_uri, run_id, file_bytes) + compact_folder(folder_uri, file_bytes)


def compact_folder(folder_uri: str, file_bytes: int = MERGED_FILE_BYTES, fan_in: int | None = None) -> int:
    """Merge the small files many runs left in an output folder (one run per new input file leaves a file per
    run), so their number stays logarithmic in the rows, not linear in the runs; returns how many files it removed.

    Files are put in size tiers (under 1 MiB, then each ``fan_in`` times larger); once a tier holds ``fan_in``
    files they are merged, oldest first, into files of up to ``file_bytes`` (0: nothing merged). Files of
    ``file_bytes / 2`` or more, and files not named as our runs name them, are left alone. A merged file is named
    after its first (oldest) file, to sort just before it (a concurrent :func:`drop_duplicate_ids` keeps its copy),
    and by its files' names, so two runs merging the same files write the same file. A group one of whose files
    is gone (another run merged it) is left to that run; two runs that listed the folder apart may merge
    overlapping groups, leaving rows twice until the next :func:`drop_duplicate_ids` pass, never none.
    """
    fan_in = fan_in or COMPACT_FAN_IN
    if not file_bytes or not storage.exists(folder_uri):
        return 0
    tiers: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
    for entry in storage.list_entries(folder_uri, suffixes=(".parquet",), recursive=False):
        if OUR_FILE.fullmatch(_name(entry.uri)) and entry.size < file_bytes // 2:
            tiers[_size_tier(entry.size, fan_in)].append((entry.uri, entry.size))
    removed = 0
    for tier in sorted(tiers):
        files = sorted(tiers[tier], key=lambda file: _name(file[0]))
        if len(files) < fan_in:
            continue
        for group in _groups_up_to(files, file_bytes):
            removed += _merge_files(folder_uri, group)
    if removed:
        logger.info("merged small files of %s: %d fewer", folder_uri, removed)
    return removed


def _size_tier(size: int, fan_in: int) -> int:
    """0 under :data:`SMALLEST_TIER_BYTES`, then one more for each ``fan_in`` times as large."""
    return 0 if size < SMALLEST_TIER_BYTES else 1 + int(math.log(size / SMALLEST_TIER_BYTES, fan_in))


def _merged_name(file_uris: list[str]) -> str:
    """The name of the merge of these files: the oldest one's run id, one dash more than it has (so it sorts just
    before it, and after every file of an older run), and a digest of the files' names."""
    first = OUR_FILE.fullmatch(min(map(_name, file_uris)))
    digest = hashlib.sha256("\n".join(sorted(map(_name, file_uris))).encode()).hexdigest()[:12]
    return f"part-{first['run']}-{first['dashes']}-{digest}.parquet"


def _merge_files(folder_uri: str, file_uris: list[str]) -> int:
    """Write ``file_uris`` as one new file of ``folder_uri`` (one per schema, when their schemas differ), then
    delete them; returns how many files fewer. 0 when one is gone since the listing: another run is merging them."""
    try:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            tables = list(pool.map(read_table, file_uris))
    except FileNotFoundError:
        logger.info("not merging %d files of %s: another run merged some of them", len(file_uris), folder_uri)
        return 0
    removed = 0
    for uris, merged in _concatenated(file_uris, tables):
        write_table(storage.join(folder_uri, _merged_name(uris)), merged)
        for file_uri in uris:
            storage.delete(file_uri)
        removed += len(uris) - 1
    return removed


def _concatenated(file_uris: list[str], tables: list[pa.Table]) -> list[tuple[list[str], pa.Table]]:
    """The tables of one schema (two or more files) concatenated, for each schema: files whose columns' types
    differ (embeddings of two models, 384 and 256 wide) are never made one (Arrow would widen both types)."""
    by_schema: dict[pa.Schema, list[int]] = collections.defaultdict(list)
    for position, table in enumerate(tables):
        by_schema[table.schema.remove_metadata()].append(position)
    return [([file_uris[p] for p in same], pa.concat_tables([tables[p] for p in same]))
            for same in by_schema.values() if len(same) > 1]  # fmt: skip


def _name(uri: str) -> str:
    """A file's name: the last part of its path or key (listings give local paths absolute)."""
    return uri.rsplit("/", 1)[-1]


def _groups_up_to(sizes: list[tuple[str, int]], most: int) -> Iterator[list[str]]:
    """Consecutive files of ``(uri, size)`` gathered into groups of at most ``most`` in all; only
    groups of two or more files (a lone file, or one as large, has nothing to merge with)."""
    group: list[str] = []
    total = 0
    for file_uri, size in [*sizes, ("", most + 1)]:  # the sentinel closes the last group
        if group and total + size > most:
            if len(group) > 1:
                yield group
            group, total = [], 0
        group.append(file_uri)
        total += size


def read_relisting(list_files: Callable[[], list[str]], read: Callable[[list[str]], Read], what: str) -> Read:
    """``read`` of the files ``list_files`` gives, listed again (up to :data:`RELISTS` times) while ``read``
    finds a listed file gone: a run merged it into a new file since the listing.

    Raises:
        FileNotFoundError: a listed file was still gone after the last listing.
    """
    for _ in range(RELISTS):
        try:
            return read(list_files())
        except FileNotFoundError as gone:
            logger.info("%s: listing %s again", gone, what)
    return read(list_files())


def _read_all_if_ours(
    file_uris: list[str], columns: list[str], signature: Iterable[str] = ()
) -> Iterator[pa.Table | None]:
    """:func:`_read_if_ours` of each file, in order, ``READ_THREADS`` files at once (the first error raised)."""
    signature = list(signature)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        yield from pool.map(lambda file_uri: _read_if_ours(file_uri, columns, signature), file_uris)


def _read_if_ours(file_uri: str, columns: list[str], signature: Iterable[str] = ()) -> pa.Table | None:
    """``columns`` of one file of an output folder; None (with a warning) when it lacks any of them
    or of the ``signature`` columns: it was not written here, and is left alone. None too when it
    was deleted since its folder was listed (its run merged it into another).

    Raises:
        OSError: a file that does not read, named, so nothing is done twice or lost on a guess.
    """
    location = storage.resolve(file_uri)
    try:
        parquet = pq.ParquetFile(location.filesystem.open_input_file(location.path))
        missing = [column for column in [*columns, *signature] if column not in parquet.schema_arrow.names]
        if missing:
            logger.warning("skipping %s: it has no %s column, so it was not written here (left alone)",
                           file_uri, " or ".join(map(repr, missing)))  # fmt: skip
            return None
        return parquet.read(columns=columns)
    except FileNotFoundError:  # deleted since the folder was listed: its rows are elsewhere or gone
        logger.info("skipping %s: it is no longer there", file_uri)
        return None
    except (OSError, pa.ArrowInvalid) as error:
        raise OSError(f"cannot read {file_uri} ({error}); move it out of the output folder or retry") from error


LOGGED_ERRORS_PER_WRITE = 20  # error rows logged one by one per write_errors call


def error_row(
    source: str, error: str, stage: str, run_id: str, row: int | None = None, doc_id: str | None = None
) -> dict:
    """One row of the errors table."""
    return {"source": source, "row": row, "doc_id": doc_id, "stage": stage, "error": error,
            "run_id": run_id, "created_at": utc_now()}  # fmt: skip


def write_errors(errors_uri: str, rows: Iterable[dict]) -> int:
    """Append error rows to the errors table (one new file, named as batch files are, so the run's
    :func:`compact_output` of the table merges them); log the first ``LOGGED_ERRORS_PER_WRITE`` (a file of
    thousands of bad rows would bury the log) and how many more the table holds. Returns the count."""
    rows = list(rows)
    if not rows:
        return 0
    for row in rows[:LOGGED_ERRORS_PER_WRITE]:
        where = f"row {row['row']}" if row["row"] is not None else "whole file"
        logger.error(
            "skipped %s %s (doc_id=%s) at %s: %s", row["source"], where, row["doc_id"], row["stage"], row["error"]
        )
    if len(rows) > LOGGED_ERRORS_PER_WRITE:
        logger.error("skipped %d more rows, not logged one by one; the errors table at %s holds every one",
                     len(rows) - LOGGED_ERRORS_PER_WRITE, errors_uri)  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA)
    write_table(storage.join(errors_uri, f"part-{rows[0]['run_id']}-{uuid.uuid4().hex}.parquet"), table)
    return len(rows)


def drop_duplicate_ids(folder_uri: str, column: str, signature: Iterable[str] = (), expected: bool = False) -> int:
    """Keep one row per ``column`` value across a folder's files; returns rows removed. Each
    rewrite is logged as a warning, or as info when duplicates are ``expected`` (the job makes them).

    A batch still in flight when a job is killed can land after the rerun has planned;
    this pass at the end of every run keeps the output exactly-once anyway. The earliest
    file (by name: run ids sort by time) keeps its row; later files are rewritten
    atomically without theirs. Files without ``column`` and the ``signature`` columns are not
    ours and are left alone, and so are subfolders (a job writes none there: a user's backup copy
    in one is neither read nor pruned).
    """
    if not storage.exists(folder_uri):
        return 0
    seen: set[str] = set()
    removed = 0
    files = storage.list_files(folder_uri, suffixes=(".parquet",), recursive=False)
    for file_uri, ours in zip(files, _read_all_if_ours(files, [column], signature)):
        if ours is None:
            continue
        values = ours.column(column).to_pylist()
        keep = [value not in seen for value in values]
        seen.update(values)
        if not all(keep):
            logger.log(logging.INFO if expected else logging.WARNING, "removing %d duplicate %s rows from %s",
                       keep.count(False), column, file_uri)  # fmt: skip
            removed += rewrite_keeping(file_uri, keep)
    return removed


def drop_rows_of(folder_uri: str, column: str, values: Collection[str]) -> int:
    """Remove from a folder's files every row whose ``column`` is one of ``values``; returns rows removed.
    Each file holding some is rewritten atomically without them (deleted when none is left); files
    without ``column`` are not ours and are left alone, and so are subfolders."""
    if not values or not storage.exists(folder_uri):
        return 0
    removed = 0
    files = storage.list_files(folder_uri, suffixes=(".parquet",), recursive=False)
    for file_uri, ours in zip(files, _read_all_if_ours(files, [column])):
        if ours is not None:
            removed += rewrite_keeping(file_uri, [value not in values for value in ours.column(column).to_pylist()])
    return removed


def rewrite_keeping(file_uri: str, keep: list[bool]) -> int:
    """Rewrite a file with only the rows ``keep`` marks (delete it when none is); returns rows removed, 0 when
    the file is gone (its run merged it into a new file since: a later pass does that one)."""
    if all(keep):
        return 0
    try:
        kept = read_table(file_uri).filter(pa.array(keep))
    except FileNotFoundError:
        return 0
    if kept.num_rows:
        write_table(file_uri, kept)
    else:
        storage.delete(file_uri)
    return keep.count(False)
