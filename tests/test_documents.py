"""Planning and reading documents: every bad file and row is set aside with its reason."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayfleet.documents import is_blank, plan_input, read_work_item
from rayfleet.storage import list_parquet_files


def read_all(plan, slice_rows=256):
    rows, errors = [], []
    for item in plan.items:
        for found, invalid in read_work_item(item, "doc_id", "text", "r", slice_rows):
            rows += found
            errors += invalid
    return rows, errors


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
    plan = plan_input(list_parquet_files(str(dataset)), "doc_id", "text", done_ids=set(), run_id="r")
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
    plan = plan_input(list_parquet_files(str(dataset)), "doc_id", "text", done_ids={"a0", "b3"}, run_id="r")
    assert plan.already_done == 2
    assert plan.todo_rows == 5


def test_reading_validates_text(dataset):
    plan = plan_input(list_parquet_files(str(dataset)), "doc_id", "text", done_ids=set(), run_id="r")
    rows, errors = read_all(plan)
    assert {row["doc_id"] for row in rows} == {"a0", "a1", "a3", "a4", "b0"}
    assert {row["doc_id"]: row["text"] for row in rows}["b0"] == "ok"
    reasons = {error["doc_id"]: error["error"] for error in errors}
    assert reasons["a2"] == "empty 'text'"
    assert "not valid UTF-8" in reasons["b3"]
    # Row numbers are file-wide, across row groups.
    assert {row["doc_id"]: row["row"] for row in rows}["a4"] == 4


def test_a_large_row_group_is_streamed_in_slices_with_file_wide_row_numbers(tmp_path):
    ids = [f"d{i}" for i in range(1000)]
    pq.write_table(pa.table({"doc_id": ids, "text": [f"text {i}" for i in range(1000)]}), tmp_path / "one.parquet")
    plan = plan_input(list_parquet_files(str(tmp_path)), "doc_id", "text", done_ids={"d5"}, run_id="r")
    [item] = plan.items
    slices = list(read_work_item(item, "doc_id", "text", "r", slice_rows=100))
    assert len(slices) == 10 and all(len(rows) <= 100 for rows, _ in slices)
    rows = [row for found, _ in slices for row in found]
    assert [row["doc_id"] for row in rows] == ids[:5] + ids[6:]
    assert all(row["row"] == int(row["doc_id"][1:]) for row in rows)


def test_a_row_group_damaged_past_its_footer_sets_its_rows_aside_instead_of_failing(tmp_path):
    path = tmp_path / "damaged.parquet"
    texts = [os.urandom(300).hex() for _ in range(100)]
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(100)], "text": texts}), path,
                   compression="zstd", use_dictionary=False)  # fmt: skip
    text_chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)
    data = bytearray(path.read_bytes())
    middle = text_chunk.data_page_offset + text_chunk.total_compressed_size // 2
    data[middle : middle + 200] = bytes(byte ^ 0x5A for byte in data[middle : middle + 200])
    path.write_bytes(bytes(data))
    plan = plan_input(list_parquet_files(str(tmp_path)), "doc_id", "text", done_ids=set(), run_id="r")
    assert not plan.errors and plan.todo_rows == 100, "the footer and the id column still read"
    rows, errors = read_all(plan)
    assert len(rows) + len(errors) == 100 and len(errors) > 0
    assert all(error["stage"] == "read" and "unreadable Parquet data" in error["error"] for error in errors)
    assert sorted(row["row"] for row in rows) + sorted(error["row"] for error in errors) == list(range(100))


def test_small_row_groups_are_read_together_and_a_damaged_one_costs_only_its_rows(tmp_path):
    path = tmp_path / "row_by_row.parquet"
    texts = [os.urandom(300).hex() for _ in range(40)]
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(40)], "text": texts}), path, row_group_size=1,
                   compression="zstd", use_dictionary=False)  # fmt: skip
    plan = plan_input(list_parquet_files(str(tmp_path)), "doc_id", "text", done_ids={"d3"}, run_id="r", item_rows=16)
    assert [(item.row_groups[0], len(item.row_groups)) for item in plan.items] == [(0, 3), (4, 16), (20, 16), (36, 4)]
    rows, errors = read_all(plan)
    assert [row["row"] for row in rows] == [row for row in range(40) if row != 3] and not errors
    page = pq.ParquetFile(path).metadata.row_group(20).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[page : page + 8] = b"\xff" * 8  # the text page's header no longer parses
    path.write_bytes(bytes(data))
    rows, errors = read_all(
        plan_input(list_parquet_files(str(tmp_path)), "doc_id", "text", done_ids=set(), run_id="r", item_rows=16)
    )
    assert [error["row"] for error in errors] == [20] and "unreadable Parquet data" in errors[0]["error"]
    assert sorted(row["row"] for row in rows) == [row for row in range(40) if row != 20]


def test_columns_as_writers_store_them_are_read_as_text(tmp_path):
    pq.write_table(
        pa.table({"doc_id": pa.array([1, 2], pa.int64()), "text": pa.array(["one", "two"]).dictionary_encode()}),
        tmp_path / "category.parquet",
    )
    pq.write_table(
        pa.table({"doc_id": pa.array(["v1"], pa.string_view()), "text": pa.array(["view text"], pa.string_view())}),
        tmp_path / "view.parquet",
    )
    pq.write_table(
        pa.table({"doc_id": ["n1", "n2"], "text": pa.array([None, None], pa.null())}), tmp_path / "null.parquet"
    )
    pq.write_table(pa.table({"doc_id": ["z1"], "text": ["\u200b\u200b \ufeff"]}), tmp_path / "zero_width.parquet")
    plan = plan_input(list_parquet_files(str(tmp_path)), "doc_id", "text", done_ids=set(), run_id="r")
    assert not plan.errors
    rows, errors = read_all(plan)
    assert {row["doc_id"]: row["text"] for row in rows} == {"1": "one", "2": "two", "v1": "view text"}
    assert {error["doc_id"]: error["error"] for error in errors} == {"n1": "empty 'text'", "n2": "empty 'text'",
                                                                     "z1": "empty 'text'"}  # fmt: skip


def test_a_rows_own_source_text_is_carried_and_the_parquet_file_stays_its_source(tmp_path):
    """jobs.ingest's documents name the file each was read from: a summary of one says which document it is."""
    pq.write_table(pa.table({"doc_id": ["d1", "d2"], "text": ["one", "two"],
                             "source": pa.array(["s3://b/raw/a.pdf", None]).dictionary_encode()}),
                   tmp_path / "documents.parquet")  # fmt: skip
    pq.write_table(pa.table({"doc_id": ["n1"], "text": ["three"], "source": pa.array([7], pa.int64())}),
                   tmp_path / "numbered.parquet")  # fmt: skip
    pq.write_table(pa.table({"source": ["s1"], "text": ["four"]}), tmp_path / "keyed.parquet")
    plan = plan_input(list_parquet_files(str(tmp_path)), "doc_id", "text", done_ids=set(), run_id="r")
    rows, _ = read_all(plan)
    assert {row["doc_id"]: row["document_source"] for row in rows} == {"d1": "s3://b/raw/a.pdf", "d2": None,
                                                                       "n1": None}  # fmt: skip
    assert {row["source"] for row in rows} == {str(tmp_path / "documents.parquet"), str(tmp_path / "numbered.parquet")}
    keyed = plan_input([str(tmp_path / "keyed.parquet")], "source", "text", done_ids=set(), run_id="r")
    (keyed_rows, _), *_ = [read for item in keyed.items for read in read_work_item(item, "source", "text", "r")]
    assert [(row["doc_id"], row["document_source"]) for row in keyed_rows] == [("s1", None)], "an id, not carried"


def test_text_with_nothing_visible_is_blank_and_any_visible_character_is_not():
    for blank in ["", "  \n\t", "\x00\x00", "\x07\x1b\x08", "\u200b\ufeff", "\u200e\u00a0\u2028"]:
        assert is_blank(blank), repr(blank)
    for text in ["a", "\x00x", "。", "\u200b1", "🙂"]:
        assert not is_blank(text), repr(text)


def test_a_column_in_another_case_or_twice_is_named_as_such(tmp_path):
    write(tmp_path / "cased.parquet", DOC_ID=["x"], Text=["some text"])
    table = pa.Table.from_arrays(
        [pa.array(["y"]), pa.array(["one"]), pa.array(["two"])], names=["doc_id", "text", "text"]
    )
    pq.write_table(table, tmp_path / "twice.parquet")
    reasons = errors_by_source(
        plan_input(list_parquet_files(str(tmp_path)), "doc_id", "text", done_ids=set(), run_id="r")
    )
    assert (
        "(column names are case-sensitive: 'DOC_ID' is there; set id_column=DOC_ID)" in reasons[("cased.parquet", None)]
    )
    assert "set text_column=Text" in reasons[("cased.parquet", None)]
    assert "column 'text' appears 2 times" in reasons[("twice.parquet", None)]
