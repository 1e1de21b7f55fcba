"""LLM-as-judge: a fixed rubric scores an answer's relevance and correctness against the reference.

The judge model is configurable (``JudgeConfig.engine``). Its replies are parsed for two
1-5 grades; an unparseable reply scores ``None`` and is counted, never guessed. On vLLM the
reply is held to the format in decoding (:data:`VERDICT_FORMAT`, structured outputs): the
grades are still the model's, only their layout is forced. Because
a small judge can be noisy, the evaluation job reports the judge's rank agreement with
the reference-based metrics next to its scores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field, field_validator

from rayfleet.config import BaseConfig
from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.engines.base import Conversation

GRADE = {
    "relevance": re.compile(r"relevance\W{0,3}(?:score\W{0,3})?([1-5])", re.IGNORECASE),
    "correctness": re.compile(r"correctness\W{0,3}(?:score\W{0,3})?([1-5])", re.IGNORECASE),
}

PLACEHOLDER = re.compile(r"\{(question|reference|answer)\}")
VERDICT_FORMAT = r"Relevance: [1-5]\nCorrectness: [1-5]"  # the rubric's reply format, enforced in decoding

RUBRIC = (
    "You grade an answer to a question against a reference answer.\n"
    "Relevance (1-5): 5 = the answer addresses exactly the question asked; 1 = it is about something else.\n"
    "Correctness (1-5): 5 = it states the same facts as the reference; 3 = partly the same facts; "
    "1 = contradicts the reference or states none of its facts.\n"
    "Reply with two lines and nothing else:\nRelevance: <1-5>\nCorrectness: <1-5>"
)


class JudgeConfig(BaseConfig):
    """Which model judges, with which rubric."""

    enabled: bool = Field(True, description="Score answers with the judge; false leaves the judge column empty.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="The judge model and engine.")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_tokens=16, repetition_penalty=1.0, regex=VERDICT_FORMAT),
        description="Judge decoding: greedy, short, and held to the reply format "
        "(a small judge rarely keeps it unaided).",
    )
    rubric: str = Field(RUBRIC, description="System message: the grading rubric and the reply format.")
    user: str = Field(
        "Question: {question}\nReference answer: {reference}\nAnswer to grade: {answer}",
        description="User message; {question}, {reference} and {answer} are filled in.",
    )

    @field_validator("user")
    @classmethod
    def _has_placeholders(cls, template: str) -> str:
        missing = [name for name in ("{question}", "{reference}", "{answer}") if name not in template]
        if missing:
            raise ValueError(f"the judge prompt must contain {missing}")
        return template

    def conversation(self, question: str, reference: str, answer: str) -> Conversation:
        """The rubric and the filled-in user message (in one pass: a question that itself holds
        ``{answer}``, say about format strings, keeps it as written)."""
        values = {"question": question, "reference": reference, "answer": answer}
        user = PLACEHOLDER.sub(lambda match: values[match.group(1)], self.user)
        return [{"role": "system", "content": self.rubric}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Verdict:
    """The judge's grades (1-5) and the combined score in [0, 1]; ``None`` where the reply had none."""

    relevance: int | None
    correctness: int | None

    @property
    def score(self) -> float | None:
        if self.relevance is None or self.correctness is None:
            return None
        return ((self.relevance - 1) + (self.correctness - 1)) / 8


def parse_verdict(reply: str) -> Verdict:
    """Read the two grades out of a judge's reply."""
    found = {name: pattern.search(reply) for name, pattern in GRADE.items()}
    relevance, correctness = (int(match.group(1)) if match else None for match in found.values())
    return Verdict(relevance, correctness)
