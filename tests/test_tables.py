"""Parquet table helpers: atomic files, tolerant reads, exactly-once clean-up."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayfleet import storage
from rayfleet.tables import (
    compact_folder,
    compact_output,
    compact_run_files,
    drop_duplicate_ids,
    drop_rows_of,
    new_run_id,
    read_column_values,
    read_folder,
    read_input_folder,
    write_errors,
    write_table,
)


def test_duplicates_across_files_keep_the_earliest(tmp_path):
    write_table(str(tmp_path / "part-1.parquet"), pa.table({"doc_id": ["a", "b"], "v": [1, 2]}))
    write_table(str(tmp_path / "part-2.parquet"), pa.table({"doc_id": ["b", "c"], "v": [3, 4]}))
    write_table(str(tmp_path / "part-3.parquet"), pa.table({"doc_id": ["c"], "v": [5]}))
    assert drop_duplicate_ids(str(tmp_path), "doc_id") == 2
    table = read_folder(str(tmp_path), ["doc_id", "v"])
    assert sorted(zip(table["doc_id"].to_pylist(), table["v"].to_pylist())) == [("a", 1), ("b", 2), ("c", 4)]
    assert not (tmp_path / "part-3.parquet").exists()


def test_rows_of_given_ids_are_removed_and_a_file_left_empty_is_deleted(tmp_path):
    write_table(str(tmp_path / "part-1.parquet"), pa.table({"doc_id": ["a", "b", "c"], "v": [1, 2, 3]}))
    write_table(str(tmp_path / "part-2.parquet"), pa.table({"doc_id": ["b"], "v": [4]}))
    write_table(str(tmp_path / "theirs.parquet"), pa.table({"id": ["b"]}))  # not ours: left alone
    assert drop_rows_of(str(tmp_path), "doc_id", {"b", "z"}) == 2
    table = read_folder(str(tmp_path / "part-1.parquet"), ["doc_id", "v"])
    assert (table["doc_id"].to_pylist(), table["v"].to_pylist()) == (["a", "c"], [1, 3])
    assert not (tmp_path / "part-2.parquet").exists() and (tmp_path / "theirs.parquet").exists()
    assert drop_rows_of(str(tmp_path), "doc_id", set()) == 0
    assert drop_rows_of(str(tmp_path / "none"), "doc_id", {"a"}) == 0


@pytest.mark.parametrize("expected, level", [(False, "WARNING"), (True, "INFO")])
def test_duplicates_the_job_makes_itself_are_removed_without_a_warning(tmp_path, caplog, expected, level):
    write_table(str(tmp_path / "part-1.parquet"), pa.table({"doc_id": ["a"]}))
    write_table(str(tmp_path / "part-2.parquet"), pa.table({"doc_id": ["a", "b"]}))
    with caplog.at_level("INFO", logger="rayfleet.tables"):
        assert drop_duplicate_ids(str(tmp_path), "doc_id", expected=expected) == 1
    assert [(record.levelname, record.getMessage().split(" from ")[0]) for record in caplog.records] == [
        (level, "removing 1 duplicate doc_id rows")
    ]


def _part(folder, name: str, ids: list[str], run: str = "r1", pad: int = 0) -> None:
    summaries = [f"s-{i}" + os.urandom(pad).hex() for i in ids]  # random: padding that does not compress
    write_table(str(folder / name), pa.table({"doc_id": ids, "summary": summaries, "run_id": [run] * len(ids)}))


def test_a_runs_batch_files_are_merged_into_new_files_of_at_most_the_given_size_and_no_row_is_lost(tmp_path):
    for index in range(7):  # 7 batches of 3 rows and one too large to merge
        _part(tmp_path, f"part-R1-{index:02x}.parquet", [f"d{index}-{row}" for row in range(3)])
    _part(tmp_path, "part-R1-07.parquet", [f"d7-{row}" for row in range(3)], pad=4096)
    _part(tmp_path, "part-R0-00.parquet", ["other-1"], run="R0")  # another run's: left alone
    _part(tmp_path, "part-R0-01.parquet", ["other-2"], run="R0")
    (tmp_path / "archive").mkdir()
    _part(tmp_path / "archive", "part-R1-00.parquet", ["old"])
    small = {(tmp_path / f"part-R1-{index:02x}.parquet").stat().st_size for index in range(7)}
    assert max(small) - min(small) < min(small) // 2, "sizes alike: two fit where three do not"
    before = read_folder(str(tmp_path), ["doc_id", "summary"])

    assert compact_run_files(str(tmp_path), "R1", file_bytes=2 * max(small)) == 3  # 3 groups of 2; part-R1-06 alone
    after = read_folder(str(tmp_path), ["doc_id", "summary"])
    assert sorted(after.to_pylist(), key=str) == sorted(before.to_pylist(), key=str)
    rows = {path.name: read_folder(str(path), ["doc_id"]).num_rows for path in tmp_path.glob("*.parquet")}
    merged = sorted(name for name in rows if name.startswith("part-R1--merged-"))
    assert sorted(rows[name] for name in merged) == [6, 6, 6]
    assert {name: count for name, count in rows.items() if name not in merged} == {
        "part-R1-06.parquet": 3, "part-R1-07.parquet": 3, "part-R0-00.parquet": 1, "part-R0-01.parquet": 1}  # fmt: skip
    assert all(name < "part-R1-00.parquet" for name in merged), "a merged file sorts before the files it merges"
    assert read_folder(str(tmp_path / "archive"), ["doc_id"]).num_rows == 1
    assert compact_run_files(str(tmp_path), "R1", file_bytes=0) == 0, "0 merges nothing"
    assert compact_run_files(str(tmp_path), "R1", file_bytes=2**20) == 1, "merged files are not merged again"
    assert len(list(tmp_path.glob("part-R1--merged-*.parquet"))) == 4 and not list(tmp_path.glob("part-R1-0*"))
    assert read_column_values(str(tmp_path), "doc_id", ("summary", "run_id")) == set(before["doc_id"].to_pylist()) - {
        "old"
    }


def test_a_runs_files_under_a_relative_path_are_merged_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    _part(tmp_path / "out", "part-R1-aa.parquet", ["d1"])
    _part(tmp_path / "out", "part-R1-bb.parquet", ["d2"])
    assert compact_run_files("out", "R1") == 1
    assert [path.name[: len("part-R1--merged-")] for path in (tmp_path / "out").iterdir()] == ["part-R1--merged-"]


def _run(second: int) -> str:
    return f"20261203T1000{second:02d}Z-{second:08x}"  # run ids as new_run_id writes them, in time order


def _names(folder) -> list[str]:
    return sorted(path.name for path in folder.glob("*.parquet"))


def test_small_files_of_many_runs_are_merged_once_a_size_tier_holds_fan_in_of_them(tmp_path):
    """One small file per run (a dispatcher's run per new input file): merged by the folder pass, not per run."""
    folder, copy = tmp_path / "out", tmp_path / "copy"
    folder.mkdir(), copy.mkdir()
    for second in range(5):
        _part(folder, f"part-{_run(second)}-{second:012x}.parquet", [f"d{second}"], run=_run(second))
    _part(folder, "part-0.parquet", ["user"])  # not named as our runs name files: left alone
    _part(folder, f"part-{_run(9)}-{9:012x}.parquet", ["large"], run=_run(9), pad=2**19)  # half of file_bytes
    assert compact_folder(str(folder), file_bytes=2**20, fan_in=6) == 0, "5 small files: fewer than fan_in"

    _part(folder, f"part-{_run(5)}-{5:012x}.parquet", ["d5"], run=_run(5))
    sources = _names(folder)
    for name in sources:
        (copy / name).write_bytes((folder / name).read_bytes())
    assert compact_folder(str(folder), file_bytes=2**20, fan_in=6) == 5
    merged = f"part-{_run(0)}--"
    names = _names(folder)
    assert [name[: len(merged)] for name in names] == ["part-0.parquet"[: len(merged)], merged, f"part-{_run(9)}-0"]
    assert names[1] < sources[1], "the merge sorts before its oldest file (a dedupe pass keeps its copy)"
    assert read_column_values(str(folder), "doc_id") == {"user", "large"} | {f"d{second}" for second in range(6)}
    assert compact_folder(str(copy), file_bytes=2**20, fan_in=6) == 5
    assert _names(copy) == names, "two runs merging the same files write the same file"

    for second in range(10, 15):  # five more runs: with the merged file, a tier of six again
        _part(folder, f"part-{_run(second)}-{second:012x}.parquet", [f"d{second}"], run=_run(second))
    assert compact_folder(str(folder), file_bytes=2**20, fan_in=6) == 5
    assert [name for name in _names(folder) if name.startswith(f"part-{_run(0)}")] == [
        f"part-{_run(0)}---" + _names(folder)[1][len(f"part-{_run(0)}---") :]
    ], "a merge of merges sorts before them"
    assert len(_names(folder)) == 3
    ids = read_folder(str(folder), ["doc_id"])["doc_id"].to_pylist()
    assert sorted(ids) == sorted(["user", "large"] + [f"d{s}" for s in [*range(6), *range(10, 15)]]), "once each"
    assert compact_folder(str(folder), file_bytes=0, fan_in=2) == 0, "0 merges nothing"


def test_files_of_a_larger_size_tier_wait_for_fan_in_of_their_own(tmp_path):
    for second in range(2):
        _part(tmp_path, f"part-{_run(second)}-{second:012x}.parquet", [f"big{second}"], run=_run(second), pad=2**20)
    _part(tmp_path, f"part-{_run(2)}-{2:012x}.parquet", ["small"], run=_run(2))
    assert compact_folder(str(tmp_path), file_bytes=2**24, fan_in=3) == 0, "two 2 MiB files and a small one"
    _part(tmp_path, f"part-{_run(3)}-{3:012x}.parquet", ["big3"], run=_run(3), pad=2**20)
    assert compact_folder(str(tmp_path), file_bytes=2**24, fan_in=3) == 2
    assert len(_names(tmp_path)) == 2, "the three 2 MiB files merged, the small one alone in its tier"
    assert read_column_values(str(tmp_path), "doc_id") == {"big0", "big1", "big3", "small"}


def test_files_whose_column_types_differ_are_merged_apart_never_into_one(tmp_path):
    """Embeddings of two models (384 and 256 wide) share a folder: Arrow would widen both into a plain list."""
    for second, width in enumerate([4, 2, 4, 2]):
        vectors = pa.FixedSizeListArray.from_arrays(pa.array([float(second)] * width, pa.float32()), width)
        table = pa.table({"embedding_key": [f"k{second}"], "embedding": vectors})
        write_table(str(tmp_path / f"part-{_run(second)}-{second:012x}.parquet"), table)
    assert compact_folder(str(tmp_path), file_bytes=2**20, fan_in=4) == 2
    widths = sorted(pq.read_schema(path).field("embedding").type.list_size for path in tmp_path.glob("*.parquet"))
    assert widths == [2, 4] and read_column_values(str(tmp_path), "embedding_key") == {"k0", "k1", "k2", "k3"}


def test_a_group_one_of_whose_files_another_run_merged_is_left_to_that_run(tmp_path, monkeypatch):
    for second in range(3):
        _part(tmp_path, f"part-{_run(second)}-{second:012x}.parquet", [f"d{second}"], run=_run(second))
    listed = storage.list_entries(str(tmp_path), suffixes=(".parquet",), recursive=False)
    gone = tmp_path / f"part-{_run(2)}-{2:012x}.parquet"
    gone.unlink()
    monkeypatch.setattr(storage, "list_entries", lambda *args, **kwargs: listed)
    assert compact_folder(str(tmp_path), file_bytes=2**20, fan_in=3) == 0
    assert _names(tmp_path) == [f"part-{_run(s)}-{s:012x}.parquet" for s in range(2)], "nothing written or deleted"


def test_a_runs_own_merge_leaves_the_folder_merges_of_its_run_id_alone(tmp_path):
    run = _run(1)
    _part(tmp_path, f"part-{run}---{0:012x}.parquet", ["folder-merged"], run=run)
    _part(tmp_path, f"part-{run}-{1:012x}.parquet", ["d1"], run=run)
    _part(tmp_path, f"part-{run}-{2:012x}.parquet", ["d2"], run=run)
    assert compact_output(str(tmp_path), run) == 1, "its two batch files; three small files are no tier of 16"
    assert f"part-{run}---{0:012x}.parquet" in _names(tmp_path) and len(_names(tmp_path)) == 2


def test_a_merge_killed_before_its_deletes_leaves_rows_twice_and_the_dedupe_pass_keeps_the_merged_copy(tmp_path):
    _part(tmp_path, "part-R1-aa.parquet", ["d1", "d2"])
    _part(tmp_path, "part-R1-bb.parquet", ["d3"])
    merged = read_folder(str(tmp_path), ["doc_id", "summary", "run_id"])
    write_table(str(tmp_path / "part-R1--merged-cc.parquet"), merged)  # the merged file written, then killed
    assert drop_duplicate_ids(str(tmp_path), "doc_id", ("summary", "run_id")) == 3
    assert read_column_values(str(tmp_path), "doc_id") == {"d1", "d2", "d3"}
    assert [path.name for path in tmp_path.glob("*.parquet")] == ["part-R1--merged-cc.parquet"]


def test_a_file_deleted_after_the_folder_was_listed_is_skipped(tmp_path, monkeypatch):
    _part(tmp_path, "part-a.parquet", ["d1"])
    _part(tmp_path, "part-b.parquet", ["d2"])
    from rayfleet import storage

    listed = storage.list_files(str(tmp_path), suffixes=(".parquet",), recursive=False)
    (tmp_path / "part-b.parquet").unlink()  # another run merged it into part-a since
    monkeypatch.setattr(storage, "list_files", lambda *args, **kwargs: listed)
    assert read_column_values(str(tmp_path), "doc_id") == {"d1"}


def test_foreign_files_in_an_output_folder_are_left_alone_and_unreadable_ones_named(tmp_path):
    write_table(str(tmp_path / "good.parquet"), pa.table({"doc_id": ["a", "b"]}))
    write_table(str(tmp_path / "theirs.parquet"), pa.table({"order": [1, 2]}))
    assert read_column_values(str(tmp_path), "doc_id") == {"a", "b"}
    write_table(str(tmp_path / "later.parquet"), pa.table({"doc_id": ["b"]}))
    assert drop_duplicate_ids(str(tmp_path), "doc_id") == 1
    assert (tmp_path / "theirs.parquet").exists(), "a file this job did not write is never rewritten or removed"
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 half a file")
    with pytest.raises(OSError, match="cannot read .*cut.parquet"):
        read_column_values(str(tmp_path), "doc_id")
    assert (tmp_path / "cut.parquet").exists(), "nothing is deleted on a guess"


def test_a_foreign_file_with_the_id_column_is_not_taken_for_output_by_its_signature(tmp_path):
    write_table(str(tmp_path / "ours.parquet"), pa.table({"doc_id": ["d1"], "summary": ["s"], "run_id": ["r1"]}))
    write_table(str(tmp_path / "zz-export.parquet"), pa.table({"doc_id": ["d1", "q"], "note": ["A", "B"]}))
    signature = ("summary", "run_id")
    assert read_column_values(str(tmp_path), "doc_id", signature) == {"d1"}
    assert drop_duplicate_ids(str(tmp_path), "doc_id", signature) == 0
    assert read_folder(str(tmp_path / "zz-export.parquet"), ["doc_id", "note"]).num_rows == 2  # untouched
    assert read_folder(str(tmp_path), ["run_id"]).column("run_id").to_pylist() == ["r1"]  # the foreign file skipped


def test_a_copy_in_a_subfolder_of_an_output_folder_is_neither_counted_nor_pruned(tmp_path):
    write_table(str(tmp_path / "part-2.parquet"), pa.table({"doc_id": ["a", "b"]}))
    (tmp_path / "archive").mkdir()
    write_table(str(tmp_path / "archive" / "part-1.parquet"), pa.table({"doc_id": ["a", "c"]}))
    assert read_column_values(str(tmp_path), "doc_id") == {"a", "b"}
    assert drop_duplicate_ids(str(tmp_path), "doc_id") == 0
    assert read_folder(str(tmp_path / "archive"), ["doc_id"]).num_rows == 2
    assert read_folder(str(tmp_path / "part-2.parquet"), ["doc_id"]).num_rows == 2


def test_errors_table_rows(tmp_path):
    from rayfleet.tables import error_row

    assert (
        write_errors(str(tmp_path), [error_row("s3://b/f.parquet", "bad", "validate", "run-1", row=3, doc_id="d")]) == 1
    )
    table = read_folder(str(tmp_path), ["source", "row", "doc_id", "stage", "error", "run_id"])
    assert table.to_pylist() == [
        {"source": "s3://b/f.parquet", "row": 3, "doc_id": "d", "stage": "validate", "error": "bad", "run_id": "run-1"}
    ]
    assert write_errors(str(tmp_path), []) == 0


def test_a_runs_error_files_are_merged_with_its_output(tmp_path):
    from rayfleet.tables import error_row

    run_id = new_run_id()
    for batch in range(3):  # a file per batch with bad rows
        write_errors(str(tmp_path), [error_row("s3://b/f.parquet", "bad", "validate", run_id, row=batch)])
    assert compact_output(str(tmp_path), run_id) == 2
    assert len(storage.list_files(str(tmp_path))) == 1
    assert sorted(read_folder(str(tmp_path), ["row"]).column("row").to_pylist()) == [0, 1, 2]


def test_many_bad_rows_are_all_in_the_table_but_not_all_in_the_log(tmp_path, caplog):
    from rayfleet.tables import LOGGED_ERRORS_PER_WRITE, error_row

    rows = [error_row("s3://b/f.parquet", f"bad {n}", "validate", "run-1", row=n, doc_id=f"d{n}") for n in range(5000)]
    with caplog.at_level("ERROR", logger="rayfleet.tables"):
        assert write_errors(str(tmp_path), rows) == 5000
    assert read_folder(str(tmp_path), ["row"]).column("row").to_pylist() == list(range(5000))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == LOGGED_ERRORS_PER_WRITE + 1
    assert lines[0].startswith("skipped s3://b/f.parquet row 0 (doc_id=d0)")
    assert (
        lines[-1] == f"skipped {5000 - LOGGED_ERRORS_PER_WRITE} more rows, not logged one by one; "
        f"the errors table at {tmp_path} holds every one"
    )


def test_a_users_input_files_of_other_shapes_and_time_zones_read_as_one_table(tmp_path):
    noon = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc)
    ours = pa.table({"when": pa.array([noon], pa.timestamp("us", tz="UTC")), "a": ["x"], "extra": [1]})
    berlin = pa.table({"when": pa.array([noon], pa.timestamp("ms", tz="UTC"))
                               .cast(pa.timestamp("ms", tz="Europe/Berlin")),
                       "a": ["y"]})  # fmt: skip
    write_table(str(tmp_path / "in" / "ours.parquet"), ours)
    write_table(str(tmp_path / "in" / "theirs.pq"), berlin)
    table = read_input_folder(str(tmp_path / "in"), ["when", "a"], ["extra"])
    assert table.to_pylist() == [{"when": noon, "a": "x", "extra": 1}, {"when": noon, "a": "y", "extra": None}]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['b'\]"):
        read_input_folder(str(tmp_path / "in"), ["a", "b"])
