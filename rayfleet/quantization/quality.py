"""Quality of a quantized model against its full-precision source: greedy agreement and QA F1.

Held-out QA comes either from a QA table (``jobs.make_qa``'s ``qa/test.parquet``:
``question``, ``answer``, optionally ``context``) or, when none is given, is built
deterministically from real papers with human-written answers (aclsum: each paper's
abstract is the context, and its three human summaries answer "what problem", "what
approach" and "what outcome"). Answers are scored with :func:`rayfleet.evaluation.metrics.token_f1`.
A QA table is checked when it is read: rows without a question or an answer are dropped and
counted (a table with none left is refused), so no bad row surfaces after the slow steps.

:func:`quality_verdict` gates a quantized checkpoint on its figures against the full-precision
model (:class:`QualityGateConfig`, the same thresholds as an adapter's check).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from statistics import mean
from typing import Iterable, Sequence

from pydantic import Field

from rayfleet.config import BaseConfig, InputError
from rayfleet.engines import Conversation, Generation
from rayfleet.evaluation.metrics import token_f1
from rayfleet.qa import paper_questions
from rayfleet.tables import read_input_folder

logger = logging.getLogger(__name__)

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


def read_qa_pairs(uri: str) -> tuple[list[QaPair], Counter]:
    """The usable pairs of a QA Parquet file (or folder) with ``question``, ``answer`` and an optional ``context``.

    Returns:
        The pairs, and how many rows were dropped for each reason ("no question", "no answer").

    Raises:
        FileNotFoundError: nothing at ``uri``.
        InputError: a file lacks ``question`` or ``answer`` (named), or no row is usable.
    """
    rows = read_input_folder(uri, ["question", "answer"], ["context"]).to_pylist()
    pairs, dropped = [], Counter()
    for row in rows:
        problem = unusable_qa_row(row)
        if problem:
            dropped[problem] += 1
            continue
        context = row["context"] if isinstance(row["context"], str) and row["context"].strip() else None
        pairs.append(QaPair(question=row["question"], answer=row["answer"], context=context))
    if dropped:
        logger.warning("held-out QA %s: dropped %d of %d rows: %s", uri, dropped.total(), len(rows), dict(dropped))
    if not pairs:
        raise InputError(f"held-out QA {uri} has no usable row (each needs a question and an answer): {dict(dropped)}")
    return pairs, dropped


def unusable_qa_row(row: dict) -> str | None:
    """Why a QA row cannot be scored, or None."""
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "no question"
    if not isinstance(row["answer"], str) or not row["answer"].strip():
        return "no answer"
    return None


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


class QualityGateConfig(BaseConfig):
    """What the quantized checkpoint must keep of the full-precision model's answers to be published."""

    min_prefix_agreement: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Least mean share of greedy tokens the quantized model generates as the full-precision one does "
        "before they first differ. Reported always, gated only when set: int8 activations flip near-tied tokens of "
        "small models and the answers then differ in wording while keeping their quality, which the F1 drop judges "
        "(quantization is judged by task accuracy kept, as vLLM and llm-compressor report it).",
    )
    max_f1_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Most held-out token F1 the quantized model may lose against the full-precision one.",
    )
    publish_anyway: bool = Field(
        False, description="Publish even when the gate fails (the failed verdict is recorded in the metadata)."
    )


def agreement_failures(
    prefix_agreement: float, f1_full: float, f1_quantized: float, min_prefix_agreement: float, max_f1_drop: float
) -> list[str]:
    """Why quantized outputs fall short of full-precision ones (empty when they do not); NaN never passes."""
    failures = []
    if not prefix_agreement >= min_prefix_agreement:
        failures.append(
            f"greedy agreement {prefix_agreement:.3f} with the full-precision model is below {min_prefix_agreement:.3f}"
        )
    if not f1_full - f1_quantized <= max_f1_drop:
        failures.append(f"held-out F1 falls from {f1_full:.3f} to {f1_quantized:.3f} (more than {max_f1_drop})")
    return failures


def quality_verdict(metrics: dict, gate: QualityGateConfig) -> dict:
    """The gate's verdict on :func:`rayfleet.quantization.compare.compare_models`' figures, as recorded and printed."""
    failures = agreement_failures(
        metrics["prefix_agreement"], metrics["f1_full"], metrics["f1_quantized"], gate.min_prefix_agreement,
        gate.max_f1_drop,
    )  # fmt: skip
    return {
        "passed": not failures,
        "failures": failures,
        "min_prefix_agreement": gate.min_prefix_agreement,
        "max_f1_drop": gate.max_f1_drop,
        "prefix_agreement": metrics["prefix_agreement"],
        "f1_drop": round(metrics["f1_full"] - metrics["f1_quantized"], 4),
    }
