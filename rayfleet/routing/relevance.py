"""Whether a request is about the indexed documents: the best passage's similarity, against a threshold.

A router trained on one set of documents knows nothing of the next: asked "How do I set
the range of the x axis?" after the gnuplot manual was indexed, the default router (trained
on ACL papers) sends it to the base model. The index itself knows better. A question about
the documents lies close to some passage in the index's own embedding (all-MiniLM-L6-v2),
a general request close to none; the static token embeddings the router's classifier reads
do not separate the two (``python -m bench.router_relevance``, docs/retrieval.md).

How close is close depends on the documents, so by default (``min_score="auto"``) each
index version sets its own threshold when it is loaded: just above the best-passage score
of the most similar of the router's 60 general requests (:data:`GENERAL_REQUESTS`, a
hand-written seed list of everyday requests), and never below :data:`AUTO_FLOOR`. A fixed
cosine works too.

:class:`RelevanceGate` follows the index's newest version (:class:`LatestRetriever`), so a
document ingested a minute ago counts without retraining anything::

    gate = RelevanceGate("s3://bucket/index")                       # the gnuplot manual: threshold 0.433
    gate.settle("base", "How do I set the range of the x axis?")   # ("rag", 0.681)
    gate.settle("base", "What is the capital of France?")          # ("base", 0.292)

The price is the query's transformer embedding, ~11 ms on one CPU core.
"""

from __future__ import annotations

import logging
from typing import Literal

from rayfleet.retrieval.latest import LatestRetriever
from rayfleet.retrieval.retriever import Retriever
from rayfleet.routing.examples import GENERAL_REQUESTS

logger = logging.getLogger(__name__)

AUTO_MARGIN = 0.02  # how far above the most similar general request the automatic threshold sits
# The automatic threshold's least value. An index of a handful of chunks is close to no general
# request (five short documents set 0.21), and a question scoring 0.29 against unrelated pages
# then counted as relevant; the benchmark's larger document sets set 0.43 and 0.34 on their own.
AUTO_FLOOR = 0.30


class RelevanceThresholds:
    """The least best-passage score that counts as relevant, per index version: fixed, or calibrated.

    Args:
        min_score: a cosine similarity, or "auto": for each version, :data:`AUTO_MARGIN` above
            the best-passage score of the most similar of the general requests, and at least
            :data:`AUTO_FLOOR`.

    Pass :meth:`calibrate` as a :class:`LatestRetriever`'s ``prepare`` hook, so each version is
    calibrated when it is loaded, off the query path.
    """

    def __init__(self, min_score: float | Literal["auto"] = "auto"):
        if min_score != "auto" and not -1.0 <= min_score <= 1.0:
            raise ValueError(f"min_score is a cosine similarity, in [-1, 1], or 'auto'; got {min_score}")
        self.min_score = min_score
        self.by_version: dict[str, float] = {}

    def of(self, retriever: Retriever) -> float:
        """The threshold of ``retriever``'s index version."""
        return self.by_version[retriever.manifest.version]

    def calibrate(self, retriever: Retriever) -> None:
        if self.min_score != "auto":
            self.by_version[retriever.manifest.version] = self.min_score
            return
        vectors = retriever.embedder.embed(list(GENERAL_REQUESTS))
        scores = [hits[0].score for hits in (retriever.search_vector(vector, 1) for vector in vectors) if hits]
        threshold = max((max(scores) if scores else 0.0) + AUTO_MARGIN, AUTO_FLOOR)
        self.by_version[retriever.manifest.version] = threshold
        logger.info("index version %s: a best passage scoring >= %.3f makes a request about the documents",
                    retriever.manifest.version, threshold)  # fmt: skip


class RelevanceGate:
    """Says whether a text is about what the index at ``root`` holds, and settles a router's label by it.

    Args:
        min_score: least cosine similarity of the best passage for a text to count as relevant,
            or "auto": calibrated on each index version against the general requests.
        relevant_label: the label of requests about the documents (the RAG path's).
        other_label: the label of those that are not (the base model's).
        refresh_s: least time between two looks for a newer index version (0: never).
    """

    def __init__(
        self,
        root: str,
        min_score: float | Literal["auto"] = "auto",
        relevant_label: str = "rag",
        other_label: str = "base",
        refresh_s: float = 60.0,
    ):
        if relevant_label == other_label:
            raise ValueError(f"relevant_label and other_label are both {relevant_label!r}")
        self.relevant_label, self.other_label = relevant_label, other_label
        self.thresholds = RelevanceThresholds(min_score)
        self.index = LatestRetriever(root, refresh_s, prepare=self.thresholds.calibrate)

    def threshold(self) -> float | None:
        """The threshold of the version in hand (None while the index has no version)."""
        retriever = self.index.retriever
        return None if retriever is None else self.thresholds.of(retriever)

    def best_score(self, text: str) -> float | None:
        """The cosine similarity of the passage closest to ``text``; None while the index has no version."""
        best = self._best(text)
        return None if best is None else best[0]

    def settle(self, label: str, text: str) -> tuple[str, float | None]:
        """The label for ``text`` when a classifier said ``label``, and the best passage's score.

        Between the relevant and the other label the index decides; any other label (a task
        such as rewriting, which the documents do not answer) is kept, as is ``label`` while
        the index has no version. The score is None when the index was not asked or could not answer.
        """
        if not self.decides(label):
            return label, None
        best = self._best(text)
        if best is None:
            return label, None
        score, threshold = best
        return (self.relevant_label if score >= threshold else self.other_label), score

    def decides(self, label: str) -> bool:
        """Whether a classifier's ``label`` is one the index settles (the others stand as they are)."""
        return label in (self.relevant_label, self.other_label)

    def _best(self, text: str) -> tuple[float, float] | None:
        """The best passage's score and the threshold of the version that gave it."""
        retriever = self.index.current()
        if retriever is None:
            return None
        hits = retriever.search(text, k=1)
        return (hits[0].score, self.thresholds.of(retriever)) if hits else None
