"""Measurement: does adding BM25 to the dense (MiniLM) retrieval find the right paper more often?

    python -m bench.hybrid_retrieval [papers=50]

On our data: the chunks (128 MiniLM tokens) of the abstract, introduction and conclusion
of ``papers`` ACL papers (aclsum test split), and as queries each paper's three
human-written summaries (challenge, approach, outcome), whose right answer is a chunk of
that paper. For dense, BM25 (k1=1.2, b=0.75) and their reciprocal-rank fusion (k=60),
prints one JSON line with hit@5 (a chunk of the right paper among the top 5) and MRR.
This decided that ``Retriever.search`` offers ``hybrid=True``
(``rayfleet/retrieval/lexical.py``).
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
from pydantic import Field
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.retrieval import Embedder
from rayfleet.retrieval.lexical import BM25, reciprocal_rank_fusion


class HybridBenchConfig(BaseConfig):
    papers: int = Field(50, ge=5, le=100, description="aclsum test papers to index.")
    max_tokens: int = Field(128, ge=16, description="Chunk size in MiniLM tokens.")


def fused_scores(dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of two full score matrices, as a score matrix."""
    fused = np.zeros_like(dense)
    for row, (dense_row, lexical_row) in enumerate(zip(dense, lexical)):
        for item, score in reciprocal_rank_fusion(np.argsort(-dense_row), np.argsort(-lexical_row)).items():
            fused[row, item] = score
    return fused


def figures(scores: np.ndarray, chunk_docs: np.ndarray, query_docs: np.ndarray) -> dict:
    order = np.argsort(-scores, axis=1, kind="stable")
    right = chunk_docs[order] == query_docs[:, None]
    first = np.where(right.any(axis=1), right.argmax(axis=1), len(chunk_docs))
    return {"hit_at_5": round(float(np.mean(first < 5)), 4), "mrr": round(float(np.mean(1 / (first + 1))), 4)}


def paper_chunks(papers: int, max_tokens: int) -> list[tuple[str, str]]:
    """``(doc_id, text)`` chunks of the first ``papers`` aclsum test papers."""
    from transformers import AutoTokenizer

    from jobs.demo_documents import DemoDocumentsConfig, build_documents
    from rayfleet.assets import MINILM, resolve_model
    from rayfleet.text.chunking import split_by_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM)))
    documents = build_documents(DemoDocumentsConfig(output="unused", count=papers, split="test")).to_pylist()
    return [
        (document["doc_id"], text)
        for document in documents
        for text in split_by_tokens(tokenizer, document["text"], max_tokens)
    ]


def main(config: HybridBenchConfig) -> dict:
    from aclsum import ACLSum

    rows = paper_chunks(config.papers, config.max_tokens)
    chunk_texts, chunk_docs = [text for _, text in rows], np.array([doc for doc, _ in rows])
    papers = ACLSum("test").documents[: config.papers]
    queries = [
        (paper.summaries[aspect], f"acl-{paper.id}")
        for paper in papers
        for aspect in ("challenge", "approach", "outcome")
    ]
    query_texts, query_docs = [text for text, _ in queries], np.array([doc for _, doc in queries])
    embedder = Embedder()
    dense = embedder.embed(query_texts) @ embedder.embed(chunk_texts).T
    lexical = BM25(chunk_texts).scores(query_texts)
    fused = fused_scores(dense, lexical)
    result = {
        "bench": "hybrid_retrieval",
        "n_chunks": len(rows),
        "n_queries": len(queries),
        "dense": figures(dense, chunk_docs, query_docs),
        "bm25": figures(lexical, chunk_docs, query_docs),
        "hybrid_rrf": figures(fused, chunk_docs, query_docs),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(config_or_exit(HybridBenchConfig, sys.argv[1:]))
