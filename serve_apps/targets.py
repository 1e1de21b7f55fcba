"""What a request asks for: the ``model`` field parsed into a path (and adapter), and A/B arms.

rayfleet                          routed: the router picks the path
rayfleet-rag                      the RAG path
rayfleet-finetuned:acme-qa@3      the fine-tuned path with adapter acme-qa version 3
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from serve_apps.config import MODEL_PREFIX, ABArm, ABTestConfig


class UnknownModelError(LookupError):
    """A ``model`` that names no path of this app (answered with 404)."""


@dataclass(frozen=True)
class Target:
    """A path to answer with, and the adapter reference it was asked for (fine-tuned paths)."""

    path: str
    adapter: str | None = None

    @property
    def model(self) -> str:
        name = f"{MODEL_PREFIX}-{self.path}"
        return f"{name}:{self.adapter}" if self.adapter else name


def parse_model(model: str, paths: dict[str, str]) -> Target | None:
    """The target ``model`` names, or None for the routed model.

    Args:
        paths: path name -> path kind; only ``finetuned`` paths take an adapter.

    Raises:
        UnknownModelError: the name is not one this app serves.
    """
    if model == MODEL_PREFIX:
        return None
    name, _, adapter = model.partition(":")
    path = name.removeprefix(f"{MODEL_PREFIX}-") if name.startswith(f"{MODEL_PREFIX}-") else None
    if path not in paths:
        raise UnknownModelError(f"model {model!r} does not exist; served: {', '.join(served_models(paths))}")
    if adapter and paths[path] != "finetuned":
        raise UnknownModelError(f"model {model!r}: path {path!r} takes no adapter")
    return Target(path, adapter or None)


def served_models(paths: dict[str, str]) -> list[str]:
    """The model names /v1/models lists (fine-tuned paths also take ``:<adapter>@<version>``)."""
    return [MODEL_PREFIX, *(f"{MODEL_PREFIX}-{path}" for path in paths)]


def user_bucket(test_name: str, user_id: str) -> float:
    """A user's stable position in [0, 1) for one test (salted by the test, so tests are independent)."""
    digest = hashlib.sha256(f"{test_name}\0{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_arm(test: ABTestConfig, user_id: str) -> ABArm:
    """The arm a user is in: the same arm on every request, shares following the weights."""
    position = user_bucket(test.name, user_id) * sum(arm.weight for arm in test.arms)
    for arm in test.arms:
        position -= arm.weight
        if position < 0:
            return arm
    return test.arms[-1]
