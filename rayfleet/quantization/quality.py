"""Quality of a quantized model against its full-precision source: greedy agreement and QA F1.

Held-out QA comes either from a QA table (``jobs.make_qa``'s ``qa/test.parquet``:
``question``, ``answer``, optionally ``context``) or, when none is given, is built
deterministically from real papers with human-written answers (aclsum: each paper's
abstract is the context, and its three human summaries answer "what problem", "what
approach" and "what outcome"). Answers are scored with :func:`rayfleet.evaluation.metrics.token_f1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Iterable, Sequence

from rayfleet.engines import Conversation, Generation
from rayfleet.evaluation.metrics import token_f1
from rayfleet.qa import paper_questions
from rayfleet.tables import read_table

# The reference column of each question about a paper whose abstract comes with it.
PAPER_QUESTIONS = {f"reference_{aspect}": question for aspect, question in paper_questions("this paper").items()}


@dataclass(frozen=True)
class QaPair:
    """One held-out question with its reference answer and, optionally, the text it is about."""

    question: str
    answer: str
    context: str | None = None

    def conversation(self) -> Conversation:
        """The chat the model answers: the context (if any), then the question."""
        question = f"{self.question} Answer in one sentence."
        content = f"{self.context}\n\n{question}" if self.context else question
        return [{"role": "user", "content": content}]


def qa_pairs_from_papers(papers: Iterable[dict]) -> list[QaPair]:
    """Three pairs per paper row (``text`` = its abstract, plus the three human summaries)."""
    return [
        QaPair(question=question, answer=paper[column], context=paper["text"])
        for paper in papers
        for column, question in PAPER_QUESTIONS.items()
    ]


def read_qa_pairs(uri: str) -> list[QaPair]:
    """The pairs of a QA Parquet file with ``question``, ``answer`` and an optional ``context`` column."""
    table = read_table(uri)
    contexts = table.column("context").to_pylist() if "context" in table.column_names else [None] * table.num_rows
    return [
        QaPair(question=question, answer=answer, context=context)
        for question, answer, context in zip(
            table.column("question").to_pylist(), table.column("answer").to_pylist(), contexts
        )
    ]


def qa_f1(generations: Sequence[Generation], pairs: Sequence[QaPair]) -> float:
    """Mean token F1 of the generated answers against the references."""
    if len(generations) != len(pairs):
        raise ValueError(f"{len(generations)} generations for {len(pairs)} QA pairs")
    return mean(token_f1(generation.text, pair.answer) for generation, pair in zip(generations, pairs))


def common_prefix_share(first: Sequence[int], second: Sequence[int]) -> float:
    """Share of the longer token sequence that both sequences begin with (1.0 when both are empty)."""
    longest = max(len(first), len(second))
    if longest == 0:
        return 1.0
    shared = 0
    for token_a, token_b in zip(first, second):
        if token_a != token_b:
            break
        shared += 1
    return shared / longest


def greedy_agreement(reference: Sequence[Generation], candidate: Sequence[Generation]) -> dict[str, float]:
    """How closely greedy outputs follow the reference's, token by token.

    Returns:
        ``prefix_agreement``: mean share of tokens generated identically before the first
        difference; ``identical_share``: share of outputs identical token for token.
    """
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"need equally many outputs, got {len(reference)} and {len(candidate)}")
    shares = [common_prefix_share(a.token_ids, b.token_ids) for a, b in zip(reference, candidate)]
    return {
        "prefix_agreement": round(mean(shares), 4),
        "identical_share": round(sum(share == 1.0 for share in shares) / len(shares), 4),
    }
