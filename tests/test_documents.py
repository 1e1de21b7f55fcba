"""Planning and reading documents: every bad file and row is set aside with its reason."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayfleet.documents import plan_input, read_work_item, split_item


def write(path, **columns):
    pq.write_table(pa.table(columns), path, row_group_size=2)
    return str(path)


@pytest.fixture
def dataset(tmp_path):
    write(tmp_path / "a.parquet", doc_id=["a0", "a1", "a2", "a3", "a4"], text=["t0", "t1", "  ", "t3", "t4"])
    write(tmp_path / "b.parquet", doc_id=pa.array(["b0", "a1", None, "b3"]),
          text=pa.array([b"ok", b"dup", b"x", b"\xff\xfebad"], pa.binary()))  # fmt: skip
    write(tmp_path / "c.parquet", doc_id=["c0"], body=["wrong column name"])
    write(tmp_path / "d.parquet", doc_id=["d0"], text=pa.array([7], pa.int64()))
    (tmp_path / "e.parquet").write_bytes(b"this is not parquet")
    return tmp_path


def errors_by_source(plan):
    return {(e["source"].rsplit("/", 1)[-1], e["row"]): e["error"] for e in plan.errors}


def test_plan_sets_aside_bad_files_and_rows(dataset):
    plan = plan_input(str(dataset), "doc_id", "text", done_ids=set(), run_id="r")
    errors = errors_by_source(plan)
    assert "missing column 'text'" in errors[("c.parquet", None)]
    assert "has type int64" in errors[("d.parquet", None)]
    assert "unreadable Parquet file" in errors[("e.parquet", None)]
    assert "duplicate doc_id (first at" in errors[("b.parquet", 1)]
    assert "empty 'doc_id'" in errors[("b.parquet", 2)]
    assert plan.files == 5
    assert plan.todo_rows == 5 + 2  # a0..a4, b0, b3
    assert plan.total_rows == 9


def test_plan_skips_done_ids(dataset):
    plan = plan_input(str(dataset), "doc_id", "text", done_ids={"a0", "b3"}, run_id="r")
    assert plan.already_done == 2
    assert plan.todo_rows == 5


def test_reading_validates_text(dataset):
    plan = plan_input(str(dataset), "doc_id", "text", done_ids=set(), run_id="r")
    rows, errors = [], []
    for item in plan.items:
        found, invalid = read_work_item(item, "doc_id", "text", "r")
        rows += found
        errors += invalid
    assert {row["doc_id"] for row in rows} == {"a0", "a1", "a3", "a4", "b0"}
    assert {row["doc_id"]: row["text"] for row in rows}["b0"] == "ok"
    reasons = {error["doc_id"]: error["error"] for error in errors}
    assert reasons["a2"] == "empty 'text'"
    assert "not valid UTF-8" in reasons["b3"]
    # Row numbers are file-wide, across row groups.
    assert {row["doc_id"]: row["row"] for row in rows}["a4"] == 4


def test_split_item_bounds_task_size(dataset):
    plan = plan_input(str(dataset), "doc_id", "text", done_ids=set(), run_id="r")
    pieces = [piece for item in plan.items for piece in split_item(item, 1)]
    assert all(len(piece.rows) == 1 for piece in pieces)
    assert sum(len(piece.rows) for piece in pieces) == plan.todo_rows


def test_no_parquet_files_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no Parquet files"):
        plan_input(str(tmp_path), "doc_id", "text", set(), "r")
