"""Retrieval-augmented prompts: the retrieved chunks as numbered context, and the citations they give.

The same prompt serves the evaluation job and the online RAG path, so what is measured
offline is what users get::

    hits = retriever.search(question, k=4)
    conversation = RagPrompt().conversation(question, hits)
    citations = citations_of(hits)
"""

from __future__ import annotations

from pydantic import Field

from rayfleet.config import BaseConfig
from rayfleet.engines.base import Conversation
from rayfleet.retrieval.retriever import Hit


class RagPrompt(BaseConfig):
    """How retrieved chunks and the question become a conversation."""

    system: str = Field(
        "Answer the question using only the context. Answer in one or two sentences, copying the words of the "
        "context where you can. If the context does not hold the answer, say you do not know.",
        description="System message of every RAG generation.",
    )
    max_context_chars: int = Field(
        3000, ge=200, description="Most characters of retrieved text put in the prompt (best hits first)."
    )

    def context(self, hits: list[Hit]) -> str:
        """The hits as numbered passages, cut at ``max_context_chars``."""
        passages, used = [], 0
        for number, hit in enumerate(hits, start=1):
            text = " ".join(hit.text.split())[: self.max_context_chars - used]
            if not text:
                break
            passages.append(f"[{number}] {text}")
            used += len(text)
        return "\n\n".join(passages)

    def conversation(self, question: str, hits: list[Hit]) -> Conversation:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": f"Context:\n{self.context(hits)}\n\nQuestion: {question}"},
        ]


def citations_of(hits: list[Hit]) -> list[dict]:
    """What each retrieved passage cites: document, page and chunk, with the retrieval score."""
    return [
        {"doc_id": hit.doc_id, "page": hit.page_start, "chunk_id": hit.chunk_id, "score": round(hit.score, 4)}
        for hit in hits
    ]
