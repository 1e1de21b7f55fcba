"""The retriever of an index root's newest version, followed while a server runs.

``jobs.build_index`` writes each version whole and then points ``LATEST`` at it, so a
server that loaded the index at start can pick up documents ingested since without a
redeploy: :class:`LatestRetriever` looks at ``LATEST`` every ``refresh_s`` seconds from a
background thread, whether queries come or not, loads a new version there (queries go on
with the old one) and swaps it in whole. (It used to look only when a query found a look
due, and answered that query from the old version: on a quiet server the first question
about a new document was told the documents do not cover it.) A failed check or load is
logged and the version in hand stays.
A root with no version yet is followed too: :meth:`LatestRetriever.current` gives None
until the first version appears (a server can start before any document is indexed).

    index = LatestRetriever("s3://bucket/index", refresh_s=60)
    hits = index.current().search("Which corpus do they evaluate on?", k=4, hybrid=True)
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Callable

from rayfleet.retrieval import store
from rayfleet.retrieval.retriever import Retriever

logger = logging.getLogger(__name__)


class LatestRetriever:
    """A :class:`Retriever` over the newest version of the index at ``root``.

    Args:
        refresh_s: time between two looks at ``LATEST``; 0 never looks again. The thread that looks
            ends with the object (it holds it weakly) or at :meth:`close`.
        hybrid: build a new version's BM25 before it is swapped in, so no query pays for it.
        prepare: called with each newly loaded retriever before it is swapped in (work that
            belongs to a version, done off the query path).
    """

    def __init__(
        self,
        root: str,
        refresh_s: float = 60.0,
        hybrid: bool = False,
        prepare: Callable[[Retriever], None] | None = None,
    ):
        self.root, self.refresh_s, self.hybrid, self.prepare = root, refresh_s, hybrid, prepare
        self.retriever: Retriever | None = None
        self._refreshing = threading.Lock()
        if not self.refresh():
            logger.warning("no index version at %s yet: following it for the first one", root)
        self._closed = threading.Event()
        if refresh_s:
            follower = threading.Thread(target=_follow, args=(weakref.ref(self), self._closed, refresh_s),
                                        name="index-refresh", daemon=True)  # fmt: skip
            follower.start()

    @property
    def version(self) -> str | None:
        """The version queries are answered from (None before the first one)."""
        return self.retriever.manifest.version if self.retriever else None

    def current(self) -> Retriever | None:
        """The retriever to query now (None while the root has no version); never waits for a load."""
        return self.retriever

    def close(self) -> None:
        """Stop looking for new versions (the one in hand still answers)."""
        self._closed.set()

    def refresh(self) -> bool:
        """Load and swap in the latest version if it is not the one in hand (blocking); whether it did."""
        with self._refreshing:
            latest = store.latest_version(self.root)
            if latest is None or latest == self.version:
                return False
            manifest = store.load_manifest(self.root, latest)
            in_hand = self.retriever.manifest.embedding_model_hash if self.retriever else None
            embedder = self.retriever.embedder if manifest.embedding_model_hash == in_hand else None
            loaded = self._prepared(Retriever.load(self.root, latest, embedder=embedder))
            previous, self.retriever = self.version, loaded
            logger.info("index %s: serving version %s (%d chunks; before: %s)",
                        self.root, latest, loaded.rows.num_rows, previous)  # fmt: skip
            return True

    def _prepared(self, retriever: Retriever) -> Retriever:
        retriever.embedder  # the query embedder, loaded now rather than on a query
        if self.hybrid:
            retriever.lexical
        if self.prepare is not None:
            self.prepare(retriever)
        return retriever

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception:  # a half-written or unreadable version must not take the index away
            logger.exception("index %s: refresh failed; still serving version %s", self.root, self.version)


def _follow(index_ref: "weakref.ref[LatestRetriever]", closed: threading.Event, every_s: float) -> None:
    """The background look at ``LATEST`` every ``every_s`` seconds, until the index is closed or gone."""
    while not closed.wait(every_s):
        index = index_ref()
        if index is None:
            return
        index._refresh_logged()
        del index  # not held between looks: the index can be collected
