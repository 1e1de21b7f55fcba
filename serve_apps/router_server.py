"""The router: the trained classifier of :mod:`rayfleet.routing` choosing an answer path per request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rayfleet.evaluation.drift import project_embeddings
from rayfleet.routing import RequestRouter
from serve_apps.config import RouterConfig


@dataclass(frozen=True)
class RouteChoice:
    """The path for one request and the classifier's confidence in its label (None without a classifier),
    with the prompt's projected embedding for the request log (None without a classifier)."""

    path: str
    confidence: float | None
    label: str | None
    prompt_embedding: list[float] | None = None


class RouterServer:
    """Maps the classifier's decision to a path of this app."""

    def __init__(self, config: RouterConfig, paths: list[str]):
        self.config = config
        self.paths = frozenset(paths)
        self.classifier = RequestRouter.load(config.model) if config.model else None
        if self.classifier is not None:
            self.classifier.route("warm up")  # load the embedder now, not on the first request

    async def route(self, text: str) -> RouteChoice:
        if self.classifier is None:
            return RouteChoice(self.config.default_path, None, None)
        if self.classifier.embedder.static:  # ~1 ms: a thread hand-off would cost as much
            decision = self.classifier.route(text)
        else:
            decision = await asyncio.to_thread(self.classifier.route, text)
        path = self.config.label_paths.get(decision.route, decision.route)
        if path not in self.paths:
            path = self.config.default_path
        return RouteChoice(path, round(decision.confidence, 4), decision.predicted, self.projected(decision.embedding))

    def projected(self, embedding) -> list[float] | None:
        if not self.config.embedding_dims or embedding is None:
            return None
        return project_embeddings(embedding, self.config.embedding_dims)[0].round(5).tolist()
