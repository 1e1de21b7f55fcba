"""Real labelled text for router tests: ACL papers' human summaries, labelled by aspect."""

from __future__ import annotations

import pytest


def aspect_examples(papers: int) -> list[dict]:
    """The challenge / approach / outcome summaries of ``papers`` aclsum papers, labelled by aspect.

    Written by people, and harder than the default set: all three talk about the same papers.
    """
    from aclsum import ACLSum

    return [
        {"text": paper.summaries[aspect], "label": aspect}
        for paper in ACLSum("train").documents[:papers]
        for aspect in ("challenge", "approach", "outcome")
    ]


@pytest.fixture(scope="session")
def aspect_rows() -> list[dict]:
    return aspect_examples(50)
