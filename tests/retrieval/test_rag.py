"""The RAG prompt shared by the serving path and the evaluation job, and its citations."""

from transformers import AutoTokenizer

from rayfleet.assets import MINILM, resolve_model
from rayfleet.retrieval.rag import RAG_INSTRUCTIONS, citations_of, fit_to_budget, grounded_conversation
from rayfleet.retrieval.retriever import Hit

TOKENIZER = AutoTokenizer.from_pretrained(str(resolve_model(MINILM)))


def hit(number: int, text: str, page: int | None = None) -> Hit:
    return Hit(f"doc{number}#0", f"doc{number}", text, 0.5 + number / 10, page, page, None, None)


def test_hits_are_kept_best_first_while_they_fit_the_budget():
    hits = [hit(1, "word " * 50), hit(2, "word " * 40), hit(3, "word " * 5)]
    assert [h.chunk_id for h in fit_to_budget(hits, TOKENIZER, 92)] == ["doc1#0", "doc2#0"]
    assert [h.chunk_id for h in fit_to_budget(hits, TOKENIZER, 10)] == ["doc1#0"], "the best hit is always kept"


def test_passages_are_numbered_name_their_document_and_page_and_are_cut():
    conversation = grounded_conversation("What opens at 3 bar?", [hit(1, "the valve opens at 3 bar.", 4), hit(2, "x " * 100)],
                                         TOKENIZER, 8, system_prompt="Be brief.")  # fmt: skip
    assert conversation[0] == {"role": "system", "content": f"Be brief.\n\n{RAG_INSTRUCTIONS}"}
    user = conversation[1]["content"]
    assert user.startswith("Context:\n[1] (doc1, page 4) the valve opens at 3 bar.\n\n[2] (doc2) x x x")
    assert "(doc2) " + "x " * 7 + "x\n\nQuestion" in user and user.endswith("Question: What opens at 3 bar?")


def test_citations_name_document_chunk_and_page():
    assert citations_of([hit(2, "text", 7)]) == [{"doc_id": "doc2", "chunk_id": "doc2#0", "page": 7, "score": 0.7}]
