"""Map-reduce summarization of documents of any length over a generation engine.

A document that fits the model's context is summarized in one call. A longer one is
split into token-bounded pieces (:mod:`rayfleet.text.chunking`); each piece is
summarized ("map"), and the piece summaries are summarized together ("reduce"),
again split and reduced while they do not fit; a level whose summaries are no shorter
than its text fails the document with the reason instead of looping. Nothing is ever
silently truncated. A summary the token budget (``max_tokens``) cut off mid-sentence ends
at its last complete sentence (its ``finish_reason`` stays ``length``), so neither the
output nor a reduce level's input ends in half a sentence.
All documents of a batch advance level by level, so every engine call is one large
batch (what continuous batching wants).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from pydantic import Field, field_validator

from rayfleet.config import BaseConfig
from rayfleet.engines.base import Conversation, GenerationEngine, SamplingConfig
from rayfleet.text.chunking import split_by_tokens
from rayfleet.text.scripts import CJK_SENTENCE_ENDS, SENTENCE_MARKS

logger = logging.getLogger("rayfleet.summarization")

# Tokens kept free beyond the measured prompt, for tokenizer merges at piece edges.
SAFETY_MARGIN_TOKENS = 16
# The end of a sentence: a sentence mark of any script (rayfleet.text.scripts) or an ellipsis, with any
# closing quotes or brackets, before white space or the end; CJK's full-width marks need no space.
CLOSERS = "\"'\u201d\u2019)\\]"
SENTENCE_END = re.compile(f"[{SENTENCE_MARKS}\u2026][{CLOSERS}]*(?=\\s|$)|[{CJK_SENTENCE_ENDS}][{CLOSERS}]*")


# Words whose full stop seldom ends an English sentence ("e.g. the", "et al. show").
ABBREVIATIONS = frozenset({"e.g", "i.e", "cf", "vs", "al", "fig", "eq", "no", "dr", "mr", "mrs", "ms", "prof", "st"})


def ended_at_sentence(text: str) -> str:
    """``text`` up to the end of its last complete sentence; all of it when no sentence ends in it."""
    ends = [match.end() for match in SENTENCE_END.finditer(text.rstrip()) if not _ends_abbreviation(text, match)]
    kept = text[: ends[-1]] if ends else text
    return kept if any(character.isalnum() for character in kept) else text


def _ends_abbreviation(text: str, match: re.Match) -> bool:
    if not match.group().startswith("."):
        return False
    word = (text[: match.start()].rsplit(maxsplit=1) or [""])[-1]
    return word.lstrip("(\"'\u201c").lower() in ABBREVIATIONS


class SummaryPrompts(BaseConfig):
    """Prompt templates; each must contain ``{text}``.

    The instruction comes after the text: a small model given a long text after its instruction
    loses the instruction (SmolLM2-135M answered libtasn1's manual with "Your answer has been
    provided correctly..."); after it, the same model summarizes what it read. On the demo's
    ACL papers (16, short enough for one call) both orders score the same ROUGE-L (0.159).
    """

    system: str = Field(
        "You are a careful assistant who writes concise, faithful summaries. Never invent facts.",
        description="System message of every summarization call.",
    )
    document: str = Field(
        "Document:\n{text}\n\nSummarize the document above in 3 to 5 sentences. Keep the key facts, "
        "methods and results.",
        description="Prompt for a document that fits in one call.",
    )
    part: str = Field(
        "Part of a longer document:\n{text}\n\nSummarize this part in 2 to 4 sentences, keeping its key facts.",
        description="Map step: prompt for one piece of a long document.",
    )
    combine: str = Field(
        "Summaries of consecutive parts of one document:\n{text}\n\nWrite one coherent summary of the whole "
        "document in 3 to 5 sentences.",
        description="Reduce step: prompt that merges piece summaries.",
    )

    @field_validator("document", "part", "combine")
    @classmethod
    def _has_text_placeholder(cls, template: str) -> str:
        if "{text}" not in template:
            raise ValueError("a summarization prompt must contain the {text} placeholder")
        return template


@dataclass
class SummaryResult:
    """The summary of one document and what it cost."""

    doc_id: str
    summary: str
    input_tokens: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    reduce_levels: int = 0
    finish_reason: str = "stop"


@dataclass
class _Work:
    """A document in flight: the texts to summarize at the current level."""

    result: SummaryResult
    pieces: list[str] = field(default_factory=list)
    stage: str = "document"  # document | part | combine
    tokens: int = 0  # tokens of the text this level summarizes: each reduce level must shrink it


class Summarizer:
    """Summarizes batches of documents with one engine, map-reduce style where needed."""

    def __init__(
        self,
        engine: GenerationEngine,
        sampling: SamplingConfig,
        prompts: SummaryPrompts,
        max_model_len: int,
        end_at_sentence: bool = True,
    ):
        self.engine = engine
        self.sampling = sampling
        self.prompts = prompts
        self.end_at_sentence = end_at_sentence
        self.piece_budget = self._piece_budget(max_model_len)

    @staticmethod
    def least_context(max_tokens: int) -> int:
        """The fewest context tokens a call needs besides its prompt's scaffolding: text enough to
        shrink (twice the summary), the summary itself and the margin."""
        return 3 * max_tokens + SAFETY_MARGIN_TOKENS

    def _piece_budget(self, max_model_len: int) -> int:
        """Most text tokens one call may carry: context less prompt scaffolding and output."""
        scaffolding = max(
            len(self.engine.prompt_token_ids(self._conversation(template, "")))
            for template in (self.prompts.document, self.prompts.part, self.prompts.combine)
        )
        budget = max_model_len - scaffolding - self.sampling.max_tokens - SAFETY_MARGIN_TOKENS
        # Each reduce level must shrink the text, or long documents would never converge.
        if budget < 2 * self.sampling.max_tokens:
            raise ValueError(
                f"max_model_len={max_model_len} leaves {budget} tokens of text per call with "
                f"max_tokens={self.sampling.max_tokens}; need at least {2 * self.sampling.max_tokens}. "
                "Raise engine.max_model_len or lower sampling.max_tokens."
            )
        return budget

    def _conversation(self, template: str, text: str) -> Conversation:
        return [
            {"role": "system", "content": self.prompts.system},
            {"role": "user", "content": template.replace("{text}", text)},
        ]

    def summarize(
        self,
        documents: list[tuple[str, str]],
        on_finished: Callable[[list[SummaryResult]], None] | None = None,
    ) -> list[SummaryResult]:
        """Summarize ``(doc_id, text)`` pairs; results come back in input order.

        ``on_finished``, when given, is handed after each level the results of the documents that
        level finished while others go on (a long document's map-reduce), so that a caller can
        commit them without waiting for the batch's longest document.
        """
        in_flight = [self._start(doc_id, text) for doc_id, text in documents]
        level = 0
        while pending := [work for work in in_flight if work.pieces]:
            calls = [(work, piece) for work in pending for piece in work.pieces]
            level, started = level + 1, time.monotonic()
            generations = self.engine.generate(
                [self._conversation(self._template(work.stage), piece) for work, piece in calls], self.sampling
            )
            outputs: dict[int, list[str]] = {}
            for (work, _), generation in zip(calls, generations):
                work.result.prompt_tokens += generation.prompt_tokens
                work.result.completion_tokens += generation.completion_tokens
                work.result.llm_calls += 1
                work.result.finish_reason = generation.finish_reason
                outputs.setdefault(id(work), []).append(self._output_text(generation.text, generation.finish_reason))
            for work in pending:
                self._advance(work, outputs[id(work)])
            self._log_level(level, calls, time.monotonic() - started)
            finished = [work.result for work in pending if not work.pieces]
            if on_finished and finished and any(work.pieces for work in in_flight):
                on_finished(finished)
        return [work.result for work in in_flight]

    def _output_text(self, text: str, finish_reason: str) -> str:
        """A generation's text, ended at its last complete sentence when the token budget cut it off."""
        return ended_at_sentence(text) if self.end_at_sentence and finish_reason == "length" else text

    @staticmethod
    def _log_level(level: int, calls: list[tuple[_Work, str]], seconds: float) -> None:
        """A progress line per level of a batch holding long documents (a map-reduce can take minutes)."""
        long_documents = {id(work) for work, _ in calls if work.stage != "document" or work.result.reduce_levels}
        if long_documents:
            logger.info(
                "map-reduce level %d: %d calls for %d documents (%d long) in %.1f s",
                level, len(calls), len({id(work) for work, _ in calls}), len(long_documents), seconds,
            )  # fmt: skip

    def _template(self, stage: str) -> str:
        return {"document": self.prompts.document, "part": self.prompts.part, "combine": self.prompts.combine}[stage]

    def _start(self, doc_id: str, text: str) -> _Work:
        input_tokens = self.engine.count_tokens(text)
        work = _Work(SummaryResult(doc_id=doc_id, summary="", input_tokens=input_tokens), tokens=input_tokens)
        if input_tokens <= self.piece_budget:
            work.pieces, work.stage = [text], "document"
        else:
            work.pieces, work.stage = split_by_tokens(self.engine.tokenizer, text, self.piece_budget), "part"
        return work

    def _advance(self, work: _Work, outputs: list[str]) -> None:
        """After a level: finish, reduce the piece summaries, or split them again."""
        if work.stage in ("document", "combine"):
            work.result.summary, work.pieces = outputs[0], []
            return
        work.result.reduce_levels += 1
        combined = "\n\n".join(outputs)
        tokens = self.engine.count_tokens(combined)
        if tokens >= work.tokens:
            raise ValueError(
                f"document {work.result.doc_id!r}: the part summaries ({tokens} tokens) are no shorter than what they "
                f"summarize ({work.tokens}), so map-reduce would never end; raise engine.max_model_len or lower "
                "sampling.max_tokens"
            )
        work.tokens = tokens
        if tokens <= self.piece_budget:
            work.pieces, work.stage = [combined], "combine"
        else:
            work.pieces, work.stage = split_by_tokens(self.engine.tokenizer, combined, self.piece_budget), "part"
