"""Retrieval-augmented prompts: the retrieved chunks as numbered context, and the citations they give.

One implementation serves the online RAG path (``serve_apps.paths.RagPath``) and the
evaluation job, so what is measured offline is what users get::

    hits = fit_to_budget(retriever.search(question, k=4, hybrid=True), tokenizer, 768)
    conversation = grounded_conversation(question, hits, tokenizer, 768)
    citations = citations_of(hits)
"""

from __future__ import annotations

from rayfleet.engines.base import Conversation
from rayfleet.retrieval.retriever import Hit

RAG_INSTRUCTIONS = (
    "Answer the question using only the numbered context passages below. Cite the passages you use "
    "like [1]. If the passages do not contain the answer, say that you do not know."
)


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_to_budget(hits: list[Hit], tokenizer, max_context_tokens: int) -> list[Hit]:
    """The best hits whose texts fit ``max_context_tokens`` together (at least the best one, cut)."""
    kept, used = [], 0
    for hit in hits:
        tokens = token_count(tokenizer, hit.text)
        if kept and used + tokens > max_context_tokens:
            break
        kept.append(hit)
        used += tokens
    return kept


def grounded_conversation(
    question: str, hits: list[Hit], tokenizer, max_context_tokens: int, system_prompt: str | None = None
) -> Conversation:
    """The hits as numbered passages (document and page named, each cut to the budget), then the question."""
    passages = []
    for number, hit in enumerate(hits, start=1):
        ids = tokenizer(hit.text, add_special_tokens=False)["input_ids"][:max_context_tokens]
        page = f", page {hit.page_start}" if hit.page_start is not None else ""
        passages.append(f"[{number}] ({hit.doc_id}{page}) {tokenizer.decode(ids)}")
    system = "\n\n".join(filter(None, [system_prompt, RAG_INSTRUCTIONS]))
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "Context:\n" + "\n\n".join(passages) + f"\n\nQuestion: {question}"},
    ]


def citations_of(hits: list[Hit]) -> list[dict]:
    """What each passage cites: document, chunk and page, with the retrieval score."""
    return [
        {"doc_id": hit.doc_id, "chunk_id": hit.chunk_id, "page": hit.page_start, "score": round(hit.score, 4)}
        for hit in hits
    ]
