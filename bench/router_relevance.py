"""Benchmark: routing requests about a company's own documents, with and without the relevance gate.

    python -m bench.router_relevance [min_score=auto|0.45] [threads=1]

Two document sets stand in for a company's: the real PDFs of ``../shared/data/pdfs`` (the
311-page gnuplot manual and the Octave reference card) and this repository's own
documentation (``README.md`` and ``docs/``; its figures move a little as the docs change).
Each is parsed and chunked as ``jobs.ingest`` does and indexed with the index's model
(all-MiniLM-L6-v2) in this process, less any chunk that quotes one of the prompts word for
word (the docs discuss this benchmark's results). The router is the default one (``jobs.train_router`` on
its default set, as ``make train-router`` trains it). The prompts, ``bench/data/router_prompts_*.jsonl``,
were written by hand and nothing is trained or calibrated on them: questions a user of
those documents would ask (label ``rag``), general requests (``base``) and summarize or
rewrite tasks (``finetuned``).

Each prompt is routed twice: by the classifier alone (the baseline, the router as it was)
and by the classifier with :class:`rayfleet.routing.relevance.RelevanceGate` over its
documents' index. Prints one JSON line: accuracy and recall per label of both, per document
set and over all prompts, each set's threshold, its lowest document-question score and
highest general-request score, and the gate's time per request (p50/p99).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field

from bench.stats import p50_p99
from jobs.train_router import TrainRouterConfig
from jobs.train_router import main as train_router
from rayfleet import storage
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.ingestion import ChunkingConfig, FileIngester
from rayfleet.retrieval import Embedder, store
from rayfleet.retrieval.chunks import CHUNK_COLUMNS
from rayfleet.routing import RequestRouter
from rayfleet.routing.relevance import RelevanceGate

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


class DocumentSet(BaseConfig):
    """Documents to index and the hand-written prompts about them."""

    documents: list[str] = Field(..., description="Files or folders to ingest.")
    prompts: str = Field(..., description="JSONL of text,label prompts (rag, base, finetuned).")


DEFAULT_SETS = {
    "pdfs": DocumentSet(
        documents=[str(ROOT / ".." / "shared" / "data" / "pdfs")], prompts=str(DATA / "router_prompts_pdfs.jsonl")
    ),
    "rayfleet_docs": DocumentSet(
        documents=[str(ROOT / "README.md"), str(ROOT / "docs")],
        prompts=str(DATA / "router_prompts_rayfleet_docs.jsonl"),
    ),
}


class RouterRelevanceBenchConfig(BaseConfig):
    """What the benchmark indexes and routes."""

    sets: dict[str, DocumentSet] = Field(default_factory=lambda: dict(DEFAULT_SETS), description="Document sets.")
    min_score: float | Literal["auto"] = Field(
        "auto", description="The gate's threshold: a cosine, or auto (calibrated on each index, the serving default)."
    )
    threads: int = Field(1, ge=1, description="torch threads for the query embedding (a serving replica runs one).")


def document_chunks(paths: list[str]) -> pa.Table:
    """The chunks ``jobs.ingest`` makes of every file under ``paths``."""
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1 << 30, run_id="bench")
    entries = [entry for path in paths for entry in storage.list_entries(path)]
    rows = [row for entry in entries for row in ingester.ingest(entry, {}).chunks]
    return pa.Table.from_pylist(rows, schema=CHUNK_COLUMNS)


def without_quotes_of(chunks: pa.Table, prompts: list[str]) -> pa.Table:
    """``chunks`` less those that quote one of ``prompts`` word for word (this repository's docs
    quote the benchmark's own prompts when they discuss its results: indexing them would leak)."""
    quoted = [" ".join(prompt.lower().split()) for prompt in prompts]
    keep = [
        not any(prompt in " ".join(text.lower().split()) for prompt in quoted) for text in chunks["text"].to_pylist()
    ]
    return chunks.filter(pa.array(keep))


def accuracy(routes: list[str], labels: list[str]) -> dict:
    recall = {
        label: round(float(np.mean([route == label for route, want in zip(routes, labels) if want == label])), 3)
        for label in sorted(set(labels))
    }
    return {"accuracy": round(float(np.mean([a == b for a, b in zip(routes, labels)])), 3), "recall": recall}


def route_set(name: str, documents: DocumentSet, router: RequestRouter, config, folder: str) -> dict:
    """Route one set's prompts with and without the gate over its documents' index."""
    lines = Path(documents.prompts).read_text().splitlines()
    prompts = [json.loads(line) for line in lines if line.strip()]
    texts, labels = [row["text"] for row in prompts], [row["label"] for row in prompts]
    every_chunk = document_chunks(documents.documents)
    chunks = without_quotes_of(every_chunk, texts)
    store.index_in_process(f"{folder}/{name}", chunks, Embedder(), "bench", ",".join(documents.documents))
    gate = RelevanceGate(f"{folder}/{name}", config.min_score, refresh_s=0)
    alone = [router.route(text).route for text in texts]
    gated, times, scores = [], [], []
    for text, label in zip(texts, alone):
        started = time.perf_counter()
        route, score = gate.settle(label, text)
        if score is not None:  # the index was asked (rag or base), not a task the gate leaves alone
            times.append((time.perf_counter() - started) * 1000)
        gated.append(route)
        scores.append(score if score is not None else gate.best_score(text))
    return {
        "labels": labels, "classifier": alone, "gated": gated, "times": times,
        "figures": {
            "chunks": chunks.num_rows, "chunks_quoting_prompts_left_out": every_chunk.num_rows - chunks.num_rows,
            "threshold": round(gate.threshold(), 3),
            "lowest_document_question_score": round(min(s for s, l in zip(scores, labels) if l == "rag"), 3),
            "highest_general_request_score": round(max(s for s, l in zip(scores, labels) if l == "base"), 3),
            "classifier": accuracy(alone, labels), "gated": accuracy(gated, labels),
        },
    }  # fmt: skip


def main(config: RouterRelevanceBenchConfig) -> dict:
    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory() as folder:
        train_router(TrainRouterConfig(output=f"{folder}/router"))
        router = RequestRouter.load(f"{folder}/router")
        results = {name: route_set(name, documents, router, config, folder) for name, documents in config.sets.items()}
    labels = [label for result in results.values() for label in result["labels"]]
    routes = {key: [route for result in results.values() for route in result[key]] for key in ("classifier", "gated")}
    classifier, gated = accuracy(routes["classifier"], labels), accuracy(routes["gated"], labels)
    report = {
        "bench": "router_relevance",
        "accuracy_classifier": classifier["accuracy"],
        "accuracy_gated": gated["accuracy"],
        "recall_classifier": classifier["recall"],
        "recall_gated": gated["recall"],
        **p50_p99([ms for result in results.values() for ms in result["times"]], "gate_"),
        "sets": {name: result["figures"] for name, result in results.items()},
        "prompts": dict(sorted({label: labels.count(label) for label in labels}.items())),
        "min_score": config.min_score,
        "threads": config.threads,
    }
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(config_or_exit(RouterRelevanceBenchConfig, sys.argv[1:]))
