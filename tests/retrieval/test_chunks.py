"""Reading chunks for indexing: bad rows and files set aside with reasons, keys and versions."""

from __future__ import annotations

import pyarrow as pa

from rayfleet.retrieval.chunks import CHUNK_COLUMNS, chunks_version, embedding_keys, read_chunks
from rayfleet.tables import write_table


def chunk(chunk_id: str, text: str, doc_id: str = "d1", **extra) -> dict:
    return {"chunk_id": chunk_id, "doc_id": doc_id, "text": text, **extra}


def test_valid_rows_are_read_with_optional_columns_and_bad_rows_set_aside(tmp_path):
    rows = [
        chunk(
            "c1",
            "Parsing with CCG supertags.",
            page_start=1,
            page_end=2,
            heading="Introduction",
            source="s3://b/p.pdf",
            title="CCG parsing",
        ),
        chunk("c2", "   ", page_start=2, page_end=2, heading=None, source="s3://b/p.pdf"),
        chunk("c1", "A repeated chunk id.", page_start=3, page_end=3, heading=None, source="s3://b/p.pdf"),
        chunk("c3", "Results on the treebank.", page_start=3, page_end=4, heading="Results", source=None, title=None),
    ]
    write_table(str(tmp_path / "chunks.parquet"), pa.Table.from_pylist(rows))
    table, errors = read_chunks(str(tmp_path), "run-1")
    assert table["chunk_id"].to_pylist() == ["c1", "c3"]
    assert table["page_start"].to_pylist() == [1, 3] and table["heading"].to_pylist() == ["Introduction", "Results"]
    assert table["title"].to_pylist() == ["CCG parsing", None]
    # A chunk without a source is attributed to the file it was read from.
    assert table["source"].to_pylist() == ["s3://b/p.pdf", str(tmp_path / "chunks.parquet")]
    assert [(error["row"], error["error"]) for error in errors] == [
        (1, "empty chunk text (chunk_id 'c2')"),
        (2, f"duplicate chunk_id 'c1' (first at {tmp_path / 'chunks.parquet'} row 0)"),
    ]


def test_a_file_without_required_columns_is_set_aside_whole(tmp_path):
    write_table(str(tmp_path / "a.parquet"), pa.Table.from_pylist([chunk("c1", "Fine text.")]))
    write_table(str(tmp_path / "b.parquet"), pa.table({"id": ["x"], "body": ["no chunk columns"]}))
    table, errors = read_chunks(str(tmp_path), "run-1")
    assert table.num_rows == 1
    (error,) = errors
    assert error["source"].endswith("b.parquet") and error["row"] is None
    assert "missing column 'chunk_id'" in error["error"] and "missing column 'text'" in error["error"]


def test_optional_columns_may_be_absent_but_not_mistyped(tmp_path):
    write_table(str(tmp_path / "a.parquet"), pa.Table.from_pylist([chunk("c1", "Text.")]))
    write_table(str(tmp_path / "b.parquet"), pa.Table.from_pylist([chunk("c2", "Text.", page_start="one")]))
    table, errors = read_chunks(str(tmp_path), "run-1")
    assert table["chunk_id"].to_pylist() == ["c1"] and table["page_start"].to_pylist() == [None]
    assert "column 'page_start' has type string" in errors[0]["error"]


def test_keys_follow_text_and_model_and_the_version_follows_metadata(tmp_path):
    base = pa.Table.from_pylist([chunk("c1", "Alpha."), chunk("c2", "Beta.")], schema=CHUNK_COLUMNS)
    edited = pa.Table.from_pylist([chunk("c1", "Alpha."), chunk("c2", "Beta, edited.")], schema=CHUNK_COLUMNS)
    keys = embedding_keys(base, "model-a")
    assert keys[0] == embedding_keys(edited, "model-a")[0] and keys[1] != embedding_keys(edited, "model-a")[1]
    assert keys != embedding_keys(base, "model-b")
    moved = base.set_column(base.schema.get_field_index("doc_id"), "doc_id", pa.array(["d1", "d2"], pa.string()))
    assert chunks_version(base, keys) == chunks_version(base.take([1, 0]), [keys[1], keys[0]])
    assert chunks_version(base, keys) != chunks_version(moved, keys)


def test_a_file_merged_away_after_the_listing_makes_the_folder_be_listed_again(tmp_path, monkeypatch):
    from rayfleet import storage

    write_table(
        str(tmp_path / "part-r--merged-1.parquet"), pa.Table.from_pylist([chunk("c1", "One."), chunk("c2", "Two.")])
    )
    stale = [str(tmp_path / "part-r-a.parquet"), str(tmp_path / "part-r-b.parquet")]  # listed before the merge
    listings = iter([stale])
    real_listing = storage.list_parquet_files
    monkeypatch.setattr(storage, "list_parquet_files", lambda uri: next(listings, None) or real_listing(uri))
    table, errors = read_chunks(str(tmp_path), "run-1")
    assert sorted(table["chunk_id"].to_pylist()) == ["c1", "c2"] and errors == []
