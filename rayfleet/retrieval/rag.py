"""Retrieval-augmented prompts: the retrieved chunks as numbered context, and the citations they give.

One implementation serves the online RAG path (``serve_apps.paths.RagPath``) and the
evaluation job, so what is measured offline is what users get::

    hits = fit_to_budget(retriever.search(question, k=4, hybrid=True, distinct=True), tokenizer, 768)
    conversation = grounded_conversation(question, hits, tokenizer, 768)
    citations = citations_of(hits)

A chat keeps its thread: :func:`chat_parts` splits it into the client's system text, the
earlier turns (the latest that fit a token budget, :func:`recent_turns`) and the question,
and :func:`retrieval_query` searches with the question, then the end of the user's turn
before it, so a follow-up ("and for the pump?") still finds its subject.

The serving path also keeps the whole prompt inside the model's context:
:func:`fit_grounded_prompt` shrinks the passages until the rendered prompt plus the answer's
``max_tokens`` fit, and raises :class:`PromptTooLong` when even the question does not.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from rayfleet.engines.base import Conversation
from rayfleet.engines.templates import count_tokens, render_prompt_ids
from rayfleet.retrieval.retriever import Hit
from rayfleet.storage import PARQUET_SUFFIXES

RAG_INSTRUCTIONS = (
    "Answer the question using only the numbered context passages below. Cite the passages you use "
    "like [1]. If the passages do not contain the answer, say that you do not know."
)
# The end of the user's earlier turn that joins a follow-up question in the search text. The question
# goes first and this stays short: all-MiniLM-L6-v2 reads only the first 256 tokens of a text.
EARLIER_QUERY_WORDS = 64
EARLIER_QUERY_CHARACTERS = 400  # the same cap for scripts written without spaces (Chinese, Japanese)
# Fewest tokens of passage text worth answering from; less room than this fails the request.
MIN_PASSAGE_TOKENS = 32


class GroundedPrompt(NamedTuple):
    """A grounded prompt that fits: the passages used, the conversation and its rendered prompt ids."""

    passages: list[Hit]
    conversation: Conversation
    prompt_ids: list[int]


class PromptTooLong(ValueError):
    """The question (with the instructions and ``max_tokens``) leaves no room for passages in the model's context."""


def fit_to_budget(hits: list[Hit], tokenizer, max_context_tokens: int) -> list[Hit]:
    """The best hits whose passages (text and ``[n] (title, page, section)`` label) fit ``max_context_tokens``
    together, best first; a hit too long for what is left is skipped, so shorter lower-ranked ones still
    come in. The best hit is always kept (cut to the budget by :func:`grounded_conversation`)."""
    kept, used = [], 0
    for hit in hits:
        tokens = count_tokens(tokenizer, hit.text) + count_tokens(
            tokenizer, f"[{len(kept) + 1}] ({passage_label(hit)}) "
        )
        if kept and used + tokens > max_context_tokens:
            continue
        kept.append(hit)
        used += tokens
    return kept


def fit_grounded_prompt(
    question: str,
    hits: list[Hit],
    tokenizer,
    max_context_tokens: int,
    max_prompt_tokens: int,
    system_prompt: str | None = None,
    history: Conversation | None = None,
) -> GroundedPrompt:
    """The :func:`grounded_conversation` (its passages, messages and rendered prompt ids) with the passage budget
    lowered from ``max_context_tokens`` until the whole prompt takes at most ``max_prompt_tokens`` (the model's
    context less the answer's ``max_tokens``).

    Raises:
        PromptTooLong: fewer than :data:`MIN_PASSAGE_TOKENS` would be left for passages.
    """
    budget = max_context_tokens
    while budget >= MIN_PASSAGE_TOKENS:
        passages = fit_to_budget(hits, tokenizer, budget)
        conversation = grounded_conversation(question, passages, tokenizer, budget, system_prompt, history)
        prompt_ids = render_prompt_ids(tokenizer, conversation)
        overflow = len(prompt_ids) - max_prompt_tokens
        if overflow <= 0:
            return GroundedPrompt(passages, conversation, prompt_ids)
        budget -= overflow  # the rendered prompt is measured again: labels and re-tokenized cuts vary a little
    bare = grounded_conversation(question, [], tokenizer, 0, system_prompt, history)
    without_passages = render_prompt_ids(tokenizer, bare)
    raise PromptTooLong(
        f"the question and conversation take {len(without_passages)} prompt tokens with the RAG instructions, leaving "
        f"{max(max_prompt_tokens - len(without_passages), 0)} of {max_prompt_tokens} (the model's context less "
        f"max_tokens) for retrieved passages, fewer than {MIN_PASSAGE_TOKENS}: shorten the question or the "
        "conversation, or lower max_tokens"
    )


def passage_label(hit: Hit) -> str:
    """Where a passage comes from, as a reader would name it: the document's title (else its file name,
    else its id), the page, and the section when that is not just the title again."""
    name = hit.title or _file_name(hit.source) or hit.doc_id
    parts = [name]
    if hit.page_start is not None:
        parts.append(f"page {hit.page_start}")
    if hit.heading and hit.heading != name:
        parts.append(f"section {hit.heading}")
    return ", ".join(parts)


def _file_name(source: str | None) -> str | None:
    """The document file's name; None for no source, or for a chunks table a chunk was attributed to."""
    if not source or source.endswith(PARQUET_SUFFIXES):
        return None
    return source.rstrip("/").rsplit("/", 1)[-1] or None


def grounded_conversation(
    question: str,
    hits: list[Hit],
    tokenizer,
    max_context_tokens: int,
    system_prompt: str | None = None,
    history: Conversation | None = None,
) -> Conversation:
    """The system text and the RAG instructions, the earlier turns of the chat (``history``), then the hits
    as numbered passages (each named by :func:`passage_label`, each cut to the budget) and the question."""
    passages = []
    for number, hit in enumerate(hits, start=1):
        ids = tokenizer(hit.text, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
        ids = ids[:max_context_tokens]
        passages.append(f"[{number}] ({passage_label(hit)}) {tokenizer.decode(ids)}")
    system = "\n\n".join(filter(None, [system_prompt, RAG_INSTRUCTIONS]))
    return [
        {"role": "system", "content": system},
        *(history or []),
        {"role": "user", "content": "Context:\n" + "\n\n".join(passages) + f"\n\nQuestion: {question}"},
    ]


def prompt_layout_id(tokenizer) -> str:
    """A short hash of how :func:`grounded_conversation` lays a prompt out, so training data built with one
    layout is never reused under another."""
    sample = Hit("chunk", "doc", "passage", 1.0, 1, 1, "Section", "s3://bucket/file.pdf", "Title")
    earlier = [{"role": "user", "content": "Earlier."}]
    conversation = grounded_conversation("Question?", [sample], tokenizer, 16, "System.", earlier)
    return hashlib.sha256(json.dumps(conversation, sort_keys=True).encode()).hexdigest()[:8]


def chat_parts(conversation: Conversation) -> tuple[str | None, Conversation, str]:
    """A chat split for a grounded answer: the client's system text (None if none), the user and
    assistant turns before the last user message, and that message: the question (a chat with no
    user message asks its last message; one of system messages only, their text)."""
    system = "\n\n".join(m["content"] for m in conversation if m["role"] == "system" and m["content"].strip())
    turns = [message for message in conversation if message["role"] != "system"]
    if not turns:
        return None, [], system
    asking = max((i for i, message in enumerate(turns) if message["role"] == "user"), default=len(turns) - 1)
    return system or None, turns[:asking], turns[asking]["content"]


def recent_turns(turns: Conversation, tokenizer, max_tokens: int) -> Conversation:
    """The latest turns whose contents fit ``max_tokens`` together (the oldest dropped first), starting
    with a user turn."""
    kept, used = [], 0
    for message in reversed(turns):
        used += count_tokens(tokenizer, message["content"])
        if used > max_tokens:
            break
        kept.insert(0, message)
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return kept


def retrieval_query(question: str, earlier: Conversation) -> str:
    """What to search with: the question first, then the end of the user's turn before it when there is one
    (its last :data:`EARLIER_QUERY_WORDS` words), so a long earlier turn never pushes the question past what the
    embedding model reads."""
    previous = [message["content"] for message in earlier if message["role"] == "user"][-1:]
    return "\n".join([question] + [_last_words(text) for text in previous if text.strip()])


def _last_words(text: str) -> str:
    """The last :data:`EARLIER_QUERY_WORDS` words of ``text``, at most :data:`EARLIER_QUERY_CHARACTERS` long."""
    ending = " ".join(text.split()[-EARLIER_QUERY_WORDS:])
    return ending[-EARLIER_QUERY_CHARACTERS:]


def citations_of(hits: list[Hit]) -> list[dict]:
    """What each passage cites: document, chunk, page, title and file, with the retrieval score."""
    return [
        {
            "doc_id": hit.doc_id,
            "chunk_id": hit.chunk_id,
            "page": hit.page_start,
            "title": hit.title,
            "source": hit.source,
            "score": round(hit.score, 4),
        }  # fmt: skip
        for hit in hits
    ]
