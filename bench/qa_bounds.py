"""What token F1 the demo's held-out Q&A allows, with and without the paper's text.

    python -m bench.qa_bounds [test_papers=40] [train_papers=100]

The held-out questions (``make quality``) ask for the problem, approach and results of
ACL papers the model never saw (aclsum test split), and their references are the
papers' human summaries. This measures three reference points on the same questions,
no model involved:

- ``best_constant``: the one training-split summary of each aspect that scores best
  when given as the answer to every test question of that aspect. A closed-book model
  that learned the answers' style, but knows nothing of an unseen paper, scores about
  this.
- ``title_constant``: the asked paper's title followed by the one training-split summary
  that scores best so. The question names the paper by its title, so a closed-book model
  can restate what the title says and add the answers' style: it knows nothing more of
  the paper than the question tells it, and this is about what fine-tuning alone can win.
- ``lead_sentence``: the paper's first abstract sentence, a trivial extractive answer.
- ``oracle_sentence``: the paper's single best sentence (abstract, introduction or
  conclusion) for each reference: what a one-sentence answer from the paper's own
  text can reach.

Prints one JSON line: each figure overall and per aspect.
"""

from __future__ import annotations

import json
import statistics
import sys

from pydantic import Field

from jobs.demo_documents import SECTIONS, detokenize
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.evaluation.metrics import token_f1
from rayfleet.qa import PAPER_ASPECT_QUESTIONS


class QaBoundsConfig(BaseConfig):
    test_papers: int = Field(40, ge=1, le=100, description="Held-out aclsum test papers (make quality's QUALITY_DOCS).")
    train_papers: int = Field(
        100, ge=1, le=100, description="Training papers whose summaries are the constant answers."
    )


def best_constant(candidates: list[str], references: list[str], leads: list[str] | None = None) -> tuple[str, float]:
    """The candidate with the highest mean token F1 as the answer to every reference, and that mean.

    With ``leads`` (one per reference), each answer is that reference's lead followed by the candidate.
    """
    leads = leads or [""] * len(references)

    def mean_f1(candidate: str) -> float:
        return statistics.fmean(
            token_f1(f"{lead} {candidate}", reference) for lead, reference in zip(leads, references)
        )

    f1, answer = max((mean_f1(candidate), candidate) for candidate in candidates)
    return answer, f1


def sentence_f1s(sentences: list[str], reference: str) -> list[float]:
    return [token_f1(sentence, reference) for sentence in sentences]


def paper_sentences(paper) -> list[str]:
    return [detokenize(sentence) for section in SECTIONS["sections"] for sentence in paper.sentences[section]]


def main(config: QaBoundsConfig) -> dict:
    from aclsum import ACLSum

    train, test = ACLSum("train").documents[: config.train_papers], ACLSum("test").documents[: config.test_papers]
    names = ("best_constant", "title_constant", "lead_sentence", "oracle_sentence")
    figures: dict[str, dict[str, float]] = {name: {} for name in names}
    for aspect in PAPER_ASPECT_QUESTIONS:
        references = [paper.summaries[aspect] for paper in test]
        constants = [paper.summaries[aspect] for paper in train]
        figures["best_constant"][aspect] = best_constant(constants, references)[1]
        figures["title_constant"][aspect] = best_constant(constants, references, [paper.title for paper in test])[1]
        per_paper = [sentence_f1s(paper_sentences(paper), paper.summaries[aspect]) for paper in test]
        figures["lead_sentence"][aspect] = statistics.fmean(f1s[0] for f1s in per_paper)
        figures["oracle_sentence"][aspect] = statistics.fmean(max(f1s) for f1s in per_paper)
    result = {"test_papers": len(test), "questions": len(PAPER_ASPECT_QUESTIONS) * len(test)}
    for name, by_aspect in figures.items():
        result[f"{name}_f1"] = round(statistics.fmean(by_aspect.values()), 3)
        result[f"{name}_f1_by_aspect"] = {aspect: round(f1, 3) for aspect, f1 in by_aspect.items()}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(config_or_exit(QaBoundsConfig, sys.argv[1:]))
