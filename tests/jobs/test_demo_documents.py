"""The demo document set: real ACL papers, their human summaries as Q&A, and their chunks."""

from __future__ import annotations

from jobs.demo_documents import DEMO_QUESTIONS, DemoDocumentsConfig, main
from rayfleet.tables import read_folder, read_table


def test_documents_qa_and_chunks_are_written_together(tmp_path):
    config = DemoDocumentsConfig(output=str(tmp_path / "documents"), count=3, split="test", content="abstract",
                                 qa_output=str(tmp_path / "qa"), chunks_output=str(tmp_path / "chunks"),
                                 chunk_tokens=64)  # fmt: skip

    documents = read_table(main(config)).to_pylist()

    qa = read_folder(str(tmp_path / "qa"), ["question", "answer", "doc_id", "split", "origin"]).to_pylist()
    assert len(qa) == 3 * len(DEMO_QUESTIONS)
    first = documents[0]
    assert {row["answer"] for row in qa if row["doc_id"] == first["doc_id"]} == {
        first["reference_challenge"], first["reference_approach"], first["reference_outcome"]}  # fmt: skip
    assert all(first["title"] in row["question"] for row in qa if row["doc_id"] == first["doc_id"])
    assert {row["split"] for row in qa} == {"test"}
    chunks = read_folder(str(tmp_path / "chunks"), ["chunk_id", "doc_id", "text"]).to_pylist()
    assert {row["doc_id"] for row in chunks} == {document["doc_id"] for document in documents}
    for document in documents:
        pieces = [row["text"] for row in chunks if row["doc_id"] == document["doc_id"]]
        assert len(" ".join(pieces)) >= 0.9 * len(document["text"]), "chunks cover the document"
    assert len({row["chunk_id"] for row in chunks}) == len(chunks)
