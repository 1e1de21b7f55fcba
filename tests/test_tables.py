"""Parquet table helpers: atomic files, tolerant reads, exactly-once clean-up."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rayfleet.tables import drop_duplicate_ids, read_column_values, read_folder, write_errors, write_table


def test_duplicates_across_files_keep_the_earliest(tmp_path):
    write_table(str(tmp_path / "part-1.parquet"), pa.table({"doc_id": ["a", "b"], "v": [1, 2]}))
    write_table(str(tmp_path / "part-2.parquet"), pa.table({"doc_id": ["b", "c"], "v": [3, 4]}))
    write_table(str(tmp_path / "part-3.parquet"), pa.table({"doc_id": ["c"], "v": [5]}))
    assert drop_duplicate_ids(str(tmp_path), "doc_id") == 2
    table = read_folder(str(tmp_path), ["doc_id", "v"])
    assert sorted(zip(table["doc_id"].to_pylist(), table["v"].to_pylist())) == [("a", 1), ("b", 2), ("c", 4)]
    assert not (tmp_path / "part-3.parquet").exists()


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


def test_errors_table_rows(tmp_path):
    from rayfleet.tables import error_row

    assert write_errors(str(tmp_path), [error_row("s3://b/f.parquet", "bad", "validate", "run-1", row=3, doc_id="d")]) == 1
    table = read_folder(str(tmp_path), ["source", "row", "doc_id", "stage", "error", "run_id"])
    assert table.to_pylist() == [{"source": "s3://b/f.parquet", "row": 3, "doc_id": "d", "stage": "validate", "error": "bad", "run_id": "run-1"}]
    assert write_errors(str(tmp_path), []) == 0
