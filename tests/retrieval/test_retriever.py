"""Retriever over real MiniLM embeddings of real ACL paper chunks, stored locally the way the job
stores them (the job's tests go through S3)."""

from __future__ import annotations

import numpy as np
import pytest

from rayfleet.retrieval import Retriever, store
from rayfleet.retrieval.index import DimensionError
from tests.retrieval.index_versions import write_index_version


@pytest.fixture(scope="module")
def vectors(embedder, acl_chunk_table) -> np.ndarray:
    return embedder.embed(acl_chunk_table["text"].to_pylist())


@pytest.fixture
def stored_index(tmp_path, embedder, acl_chunk_table, vectors) -> str:
    """The chunks' index written the way jobs.build_index writes it."""
    write_index_version(str(tmp_path), acl_chunk_table, embedder, vectors=vectors)
    return str(tmp_path)


def test_embeddings_are_unit_vectors_of_the_model_dimension(vectors, embedder):
    assert vectors.shape[1] == embedder.dimension == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_sentence_finds_the_chunk_it_comes_from(stored_index, acl_chunk_table, embedder):
    retriever = Retriever.load(stored_index, embedder=embedder)
    target = acl_chunk_table.to_pylist()[7]
    sentence = target["text"].split(". ")[1]
    hits = retriever.search(sentence, k=5)
    assert len(hits) == 5 and hits[0].chunk_id == target["chunk_id"]
    assert hits[0].doc_id == target["doc_id"] and hits[0].text == target["text"] and hits[0].source == target["source"]
    assert hits[0].title == target["title"] and hits[0].title
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_a_version_written_before_titles_were_indexed_still_loads(stored_index, acl_chunk_table, embedder):
    import pyarrow.parquet as pq

    rows_file = f"{store.version_uri(stored_index, 'v1')}/rows.parquet"
    pq.write_table(pq.read_table(rows_file).drop_columns(["title"]), rows_file)
    retriever = Retriever.load(stored_index, embedder=embedder)
    hit = retriever.search(acl_chunk_table["text"][3].as_py(), k=1)[0]
    assert hit.chunk_id == acl_chunk_table["chunk_id"][3].as_py() and hit.title is None


def test_recall_against_exact_search_on_real_embeddings(stored_index, vectors, embedder, acl_chunk_table):
    retriever = Retriever.load(stored_index, embedder=embedder)
    queries = embedder.embed([text.split(". ")[0] for text in acl_chunk_table["text"].to_pylist()[::3]])
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    found = [[acl_chunk_table["chunk_id"][int(i)].as_py() for i in row] for row in truth]
    got = [[hit.chunk_id for hit in retriever.search_vector(query, 5)] for query in queries]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, found)]) >= 0.95


def test_filters_restrict_hits_to_documents_and_sources(stored_index, acl_chunk_table, embedder):
    retriever = Retriever.load(stored_index, embedder=embedder)
    doc_ids = sorted(set(acl_chunk_table["doc_id"].to_pylist()))[:2]
    hits = retriever.search("neural machine translation results", k=50, doc_ids=doc_ids)
    assert {hit.doc_id for hit in hits} == set(doc_ids)
    assert len(hits) == sum(1 for doc_id in acl_chunk_table["doc_id"].to_pylist() if doc_id in doc_ids)
    source = acl_chunk_table["source"][0].as_py()
    assert {hit.source for hit in retriever.search("evaluation", k=5, sources=[source])} == {source}
    assert retriever.search("evaluation", k=5, doc_ids=["no-such-document"]) == []


@pytest.mark.parametrize("hybrid", [False, True])
def test_an_empty_query_finds_nothing_and_k_below_one_is_refused_the_same_way_dense_or_hybrid(
    stored_index, embedder, hybrid
):
    retriever = Retriever.load(stored_index, embedder=embedder)
    assert retriever.search("", k=3, hybrid=hybrid) == retriever.search(" \n\t", k=3, hybrid=hybrid) == []
    with pytest.raises(ValueError, match="k must be positive, got 0"):
        retriever.search("evaluation", k=0, hybrid=hybrid)


def test_a_query_vector_of_another_dimension_is_a_clear_error(stored_index, embedder):
    retriever = Retriever.load(stored_index, embedder=embedder)
    with pytest.raises(DimensionError, match="dimension 384"):
        retriever.search_vector(np.ones(768, np.float32))


def test_a_missing_index_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="run jobs.build_index"):
        Retriever.load(str(tmp_path))


def test_hybrid_search_finds_the_chunk_respects_filters_and_reports_cosine(
    stored_index, acl_chunk_table, embedder, vectors
):
    retriever = Retriever.load(stored_index, embedder=embedder)
    target = acl_chunk_table.to_pylist()[11]
    hits = retriever.search(target["text"].split(". ")[1], k=5, hybrid=True)
    assert hits[0].chunk_id == target["chunk_id"] and len(hits) == 5
    assert hits[0].score == pytest.approx(
        float(vectors[11] @ embedder.embed([target["text"].split(". ")[1]])[0]), abs=1e-5
    )
    doc_ids = [acl_chunk_table["doc_id"][0].as_py()]
    assert {hit.doc_id for hit in retriever.search("results", k=10, doc_ids=doc_ids, hybrid=True)} == set(doc_ids)


def test_a_distinct_search_leaves_out_repeated_passages_and_still_returns_k(tmp_path, embedder):
    import pyarrow as pa

    from rayfleet.retrieval.chunks import CHUNK_COLUMNS

    text = "The pump must be serviced every six months by a certified technician."
    spaced = "  the PUMP must be serviced every six months by a certified technician. "
    copies = [("v1", text, "s3://b/manual.pdf"), ("v2", text, "s3://b/manual (copy).pdf"),
              ("v3", spaced, "s3://b/final.pdf")]  # fmt: skip
    note = "Pump service note {n}: heavy-duty pumps need service every {months} months."
    others = [(f"o{n}", note.format(n=n, months=n + 2), None) for n in range(4)]
    chunks = pa.Table.from_pylist(
        [{"chunk_id": f"c{n}", "doc_id": doc_id, "text": chunk_text, "page_start": 1, "page_end": 1, "heading": None,
          "source": source, "title": None} for n, (doc_id, chunk_text, source) in enumerate(copies + others)],
        schema=CHUNK_COLUMNS,
    )  # fmt: skip
    write_index_version(str(tmp_path), chunks, embedder)
    retriever = Retriever.load(str(tmp_path), embedder=embedder)
    question = "How often must the pump be serviced?"
    for hybrid in (False, True):
        assert len({hit.doc_id for hit in retriever.search(question, k=3, hybrid=hybrid)} & {"v1", "v2", "v3"}) == 3
        hits = retriever.search(question, k=3, hybrid=hybrid, distinct=True)
        assert len(hits) == 3 and hits[0].doc_id in {"v1", "v2", "v3"}
        assert {hit.doc_id for hit in hits[1:]} <= {"o0", "o1", "o2", "o3"}, "one copy, then other passages"
        everything = retriever.search(question, k=20, hybrid=hybrid, distinct=True)
        assert len(everything) == 5, "k beyond the distinct passages gives each once"
