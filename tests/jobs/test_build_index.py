"""jobs.build_index end to end on a real local Ray and S3 with real ACL chunks: full build,
unchanged rerun, incremental add, rebuild without re-embedding, bad rows set aside."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from jobs.build_index import (
    BuildIndexConfig,
    citing_files_that_hold_them,
    embeddings_table,
    load_embeddings,
    main,
    removed_documents,
    without_repeated_text,
)
from rayfleet import storage
from rayfleet.retrieval import Retriever, store
from rayfleet.retrieval.index import DimensionError
from rayfleet.tables import read_folder, write_table


def write_chunks(uri: str, rows: list[dict]) -> None:
    write_table(uri, pa.Table.from_pylist(rows))


def test_embeddings_of_another_dimension_are_a_clear_error(tmp_path):
    write_table(str(tmp_path / "a.parquet"), embeddings_table(["k1"], ["c1"], np.ones((1, 384), np.float32), "run-1"))
    write_table(str(tmp_path / "b.parquet"), embeddings_table(["k2"], ["c2"], np.ones((1, 768), np.float32), "run-2"))
    with pytest.raises(DimensionError, match="different dimensions"):
        load_embeddings(str(tmp_path), ["k1", "k2"])


def test_embeddings_of_a_model_tried_once_do_not_stop_later_builds(tmp_path):
    minilm = np.arange(8, dtype=np.float32).reshape(2, 4)
    write_table(str(tmp_path / "a.parquet"), embeddings_table(["m1", "m2"], ["c1", "c2"], minilm, "run-1"))
    static = np.ones((2, 3), np.float32)
    write_table(str(tmp_path / "b.parquet"), embeddings_table(["s1", "s2"], ["c1", "c2"], static, "run-2"))
    assert np.array_equal(load_embeddings(str(tmp_path), ["m2", "m1"]), minilm[[1, 0]])
    assert load_embeddings(str(tmp_path), ["s1"]).shape == (1, 3)


def test_documents_missing_from_the_input_are_named_as_removed():
    previous = pa.table({"doc_id": ["a", "a", "b", "c"]})
    assert removed_documents(previous, pa.table({"doc_id": ["c", "d"]})) == ["a", "b"]
    assert removed_documents(previous, pa.table({"doc_id": ["a", "b", "c", "d"]})) == []


def test_a_document_repeating_a_chunk_word_for_word_is_indexed_with_it_once():
    chunks = pa.table({"chunk_id": [f"c{i}" for i in range(6)],
                       "doc_id": ["long", "long", "long", "other", "long", "other"],
                       "text": ["x" * 50, "x" * 50, "tail", "x" * 50, "x" * 50, "x" * 50]})  # fmt: skip
    kept = without_repeated_text(chunks)
    assert kept["chunk_id"].to_pylist() == ["c0", "c2", "c3"]  # the same text in another document stays
    assert without_repeated_text(kept) is kept


def test_a_renamed_file_is_cited_by_its_new_name():
    from datetime import datetime, timezone

    def row(n, source, doc_id, outcome):
        return {"source": source, "bytes": 1, "modified": "", "doc_id": doc_id, "outcome": outcome, "run_id": f"r{n}",
                "created_at": datetime(2026, 12, 1, n, tzinfo=timezone.utc)}  # fmt: skip

    ledger = [row(1, "in/name.txt", "d1", "ingested"), row(1, "in/b.txt", "d2", "ingested"),
              row(1, "in/gone.txt", "d3", "ingested"),
              row(2, "in/renamed.txt", "d1", "duplicate"), row(2, "in/name.txt", None, "deleted"),
              row(2, "in/gone.txt", None, "deleted")]  # fmt: skip
    chunks = pa.table({"chunk_id": ["c0", "c1", "c2"], "doc_id": ["d1", "d2", "d3"],
                       "source": ["in/name.txt", "in/b.txt", "in/gone.txt"]})  # fmt: skip
    cited = citing_files_that_hold_them(chunks, ledger)
    assert cited["source"].to_pylist() == [
        "in/renamed.txt",
        "in/b.txt",
        "in/gone.txt",
    ]  # d3: no file holds it (superseded)
    assert citing_files_that_hold_them(cited, ledger) is cited


def test_stored_embeddings_come_back_in_the_asked_order(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_table(str(tmp_path / "a.parquet"), embeddings_table(["k1", "k2", "k3"], ["c1", "c2", "c3"], vectors, "run-1"))
    assert np.array_equal(load_embeddings(str(tmp_path), ["k3", "k1"]), vectors[[2, 0]])
    with pytest.raises(KeyError, match="no stored embedding"):
        load_embeddings(str(tmp_path), ["k4"])


@pytest.mark.slow
def test_build_rerun_grow_and_shrink(ray_cluster, s3_prefix, acl_chunks, caplog, monkeypatch):
    from rayfleet import tables

    monkeypatch.setattr(tables, "COMPACT_FAN_IN", 2)  # every two small embeddings files of two runs are merged
    papers = sorted({row["doc_id"] for row in acl_chunks})
    first = [row for row in acl_chunks if row["doc_id"] in papers[:8]]
    later = [row for row in acl_chunks if row["doc_id"] in papers[8:]]
    chunks_uri, index_uri = storage.join(s3_prefix, "chunks"), storage.join(s3_prefix, "index")
    write_chunks(
        storage.join(chunks_uri, "part-1.parquet"), first + [{**first[0], "chunk_id": "blank", "text": " \n "}]
    )
    config = BuildIndexConfig(input=chunks_uri, output=index_uri, batch_size=32)

    built = main(config)
    assert (built["build_mode"], built["embedded"], built["rows"], built["errors"]) == (
        "full",
        len(first),
        len(first),
        1,
    )
    (error,) = read_folder(config.errors_uri, ["error"])["error"].to_pylist()
    assert error == "empty chunk text (chunk_id 'blank')"
    manifest = store.load_manifest(index_uri)
    assert (manifest.dimension, manifest.row_count, manifest.embedding_model) == (384, len(first), "all-minilm-l6-v2")

    rerun = main(config)
    assert (rerun["build_mode"], rerun["embedded"], rerun["version"]) == ("unchanged", 0, built["version"])

    write_chunks(storage.join(chunks_uri, "part-2.parquet"), later)
    grown = main(config)
    assert (grown["build_mode"], grown["embedded"], grown["rows"]) == ("incremental", len(later), len(acl_chunks))
    assert store.load_manifest(index_uri).parent_version == built["version"]
    assert len(storage.list_files(config.embeddings_uri, suffixes=(".parquet",))) == 1, "both runs' embeddings merged"
    target = later[3]
    hit = Retriever.load(index_uri).search(target["text"], k=1)[0]
    assert (hit.chunk_id, hit.doc_id, hit.title) == (target["chunk_id"], target["doc_id"], target["title"])

    # Trying a model of another dimension (static MiniLM, 256-d) on the same index, then going back.
    static = main(config.model_copy(update={"embedding_model": "all-minilm-l6-v2-static"}))
    assert (static["build_mode"], static["embedded"], static["rows"]) == ("full", len(acl_chunks), len(acl_chunks))
    assert store.load_manifest(index_uri).dimension == 256
    assert len(storage.list_files(config.embeddings_uri, suffixes=(".parquet",))) == 2, "256-d and 384-d kept apart"
    back = main(config)
    assert (back["build_mode"], back["embedded"], back["rows"]) == ("full", 0, len(acl_chunks))
    assert store.load_manifest(index_uri).dimension == 384

    versions = storage.join(index_uri, "versions")
    assert len(storage.subfolder_names(versions)) == 4 and back["pruned_versions"] == 0  # built, grown, static, back
    storage.delete(storage.join(chunks_uri, "part-1.parquet"))
    caplog.clear()
    shrunk = main(config.model_copy(update={"keep_versions": 2}))
    assert shrunk["pruned_versions"] == 3 and set(storage.subfolder_names(versions)) == {
        back["version"],
        shrunk["version"],
    }
    assert (shrunk["build_mode"], shrunk["embedded"], shrunk["rows"]) == ("full", 0, len(later))
    assert shrunk["removed_documents"] == 8 and grown["removed_documents"] == 0
    assert set(Retriever.load(index_uri).rows["doc_id"].to_pylist()) == set(papers[8:])
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "jobs.build_index" and r.levelname == "WARNING"]
    assert warning.startswith("8 document(s) of index version") and "give the whole chunks folder" in warning
