"""The router: the trained classifier of :mod:`rayfleet.routing` choosing an answer path per request,
and optionally the relevance gate (:mod:`rayfleet.routing.relevance`) asking the index whether a
request is about the documents."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from rayfleet.evaluation.drift import project_embeddings
from rayfleet.routing import RequestRouter
from rayfleet.routing.relevance import RelevanceGate
from serve_apps.config import RouterConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteChoice:
    """The path for one request and the classifier's confidence in its label (None without a classifier),
    with the prompt's projected embedding for the request log (None without a classifier) and the
    best passage's score when the relevance gate asked the index."""

    path: str
    confidence: float | None
    label: str | None
    prompt_embedding: list[float] | None = None
    relevance: float | None = None


class RouterServer:
    """Maps the classifier's decision, settled by the relevance gate when configured, to a path of this app."""

    def __init__(self, config: RouterConfig, paths: list[str]):
        self.config = config
        self.paths = frozenset(paths)
        self.classifier = RequestRouter.load(config.model) if config.model else None
        if self.classifier is not None:
            self.classifier.route("warm up")  # load the embedder now, not on the first request
            self.warn_of_unserved_labels()
        relevance = config.relevance
        self.gate = None
        if relevance is not None:
            self.gate = RelevanceGate(
                relevance.index,
                relevance.min_score,
                relevance.relevant_label,
                relevance.other_label,
                relevance.refresh_s,
            )

    def warn_of_unserved_labels(self) -> list[str]:
        """Log (and return) the classifier's labels that name no path of this app: their requests go to the
        default path, which a typo in ``router.label_paths`` or a label trained for another app makes silent."""
        unserved = sorted(label for label in self.classifier.labels if self.config.label_path(label) not in self.paths)
        if unserved:
            logger.warning("router labels %s name no path of this app (paths %s): their requests go to the default "
                           "path %r; map them with router.label_paths", unserved, sorted(self.paths),
                           self.config.default_path)  # fmt: skip
        return unserved

    async def route(self, text: str) -> RouteChoice:
        if self.classifier is None and self.gate is None:
            return RouteChoice(self.config.default_path, None, None)
        decision = None
        if (
            self.classifier is not None and self.classifier.embedder.static
        ):  # ~1 ms: a thread hand-off would cost as much
            decision = self.classifier.route(text)
        elif self.classifier is not None:
            decision = await asyncio.to_thread(self.classifier.route, text)
        label, relevance = decision.route if decision else self.config.default_path, None
        if self.gate is not None and self.gate.decides(label):  # a transformer embedding, ~11 ms: off the event loop
            label, score = await asyncio.to_thread(self.gate.settle, label, text)
            relevance = None if score is None else round(score, 4)
        path = self.config.label_path(label)
        if path not in self.paths:
            path = self.config.default_path
        if decision is None:
            return RouteChoice(path, None, None, relevance=relevance)
        return RouteChoice(
            path, round(decision.confidence, 4), decision.predicted, self.projected(decision.embedding), relevance
        )

    def projected(self, embedding) -> list[float] | None:
        if not self.config.embedding_dims or embedding is None:
            return None
        return project_embeddings(embedding, self.config.embedding_dims)[0].round(5).tolist()
