"""The RAG prompt and its citations."""

from rayfleet.retrieval.rag import RagPrompt, citations_of
from rayfleet.retrieval.retriever import Hit


def hit(number: int, text: str) -> Hit:
    return Hit(f"doc{number}#0", f"doc{number}", text, 0.5 + number / 10, number, number, None, None)


def test_passages_are_numbered_in_rank_order_and_cut_at_the_budget():
    prompt = RagPrompt(max_context_chars=200)
    conversation = prompt.conversation("What opens at 3 bar?", [hit(1, "The valve  opens\nat 3 bar."), hit(2, "x" * 500)])
    user = conversation[-1]["content"]
    assert user.startswith("Context:\n[1] The valve opens at 3 bar.\n\n[2] xxx")
    assert user.endswith("Question: What opens at 3 bar?")
    assert len(prompt.context([hit(1, "y" * 150), hit(2, "z" * 150), hit(3, "w" * 150)])) < 220


def test_citations_name_document_page_and_chunk():
    assert citations_of([hit(2, "text")]) == [{"doc_id": "doc2", "page": 2, "chunk_id": "doc2#0", "score": 0.7}]
