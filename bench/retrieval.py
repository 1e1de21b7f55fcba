"""Benchmark: the FAISS HNSW index against exact search on 100k realistic MiniLM vectors.

    python -m bench.retrieval [n_vectors=100000] [queries=1000] [index.ef_search=128]

The vectors are built to look like chunk embeddings of a real corpus:

- real: all-MiniLM-L6-v2 embeddings of every abstract, introduction and conclusion
  sentence of the ``aclsum`` train papers (about 3.9k sentences);
- synthetic, up to ``n_vectors``: each a real vector plus Gaussian noise drawn with the
  real embeddings' own covariance (``spread`` times it), normalized. They cluster around
  real topics in the subspace real embeddings occupy, rather than filling all 384
  dimensions uniformly (which would be easier to tell apart, and unlike text).

Queries are real embeddings of sentences from other papers (the ``val`` split). Ground
truth is exact inner-product search (``faiss.IndexFlatIP``) in the same run; latency
is one query at a time, as an online request makes it. Prints one JSON line:
recall_at_5, p50_ms, p99_ms for HNSW and for the exact baseline, n_vectors, build
seconds and the index parameters.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import faiss
import numpy as np
from pydantic import Field

from bench.stats import p50_p99
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.retrieval import Embedder, IndexParams, VectorIndex


class RetrievalBenchConfig(BaseConfig):
    n_vectors: int = Field(100_000, ge=1000, description="Vectors in the index (real first, then synthetic).")
    queries: int = Field(1000, ge=10, description="Real query embeddings (val split sentences).")
    k: int = Field(5, ge=1, description="Neighbours per query (recall@k).")
    spread: float = Field(0.6, gt=0, description="Synthetic noise scale, in units of the real embeddings' covariance.")
    seed: int = Field(0, description="Random seed for the synthetic vectors and the query sample.")
    index: IndexParams = Field(default_factory=IndexParams, description="HNSW parameters under test.")


def paper_sentences(split: str) -> list[str]:
    """Every abstract, introduction and conclusion sentence of an aclsum split (human text)."""
    from aclsum import ACLSum

    from jobs.demo_documents import detokenize

    return [
        detokenize(sentence)
        for paper in ACLSum(split).documents
        for section in ("abstract", "introduction", "conclusion")
        for sentence in paper.sentences[section]
    ]


def realistic_vectors(real: np.ndarray, total: int, spread: float, generator: np.random.Generator) -> np.ndarray:
    """``real`` followed by synthetic neighbours drawn with the real covariance, all unit length."""
    covariance = np.cov(real, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    scale = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))).astype(np.float32)
    count = total - len(real)
    anchors = real[generator.integers(len(real), size=count)]
    noise = generator.standard_normal((count, real.shape[1]), dtype=np.float32) @ scale.T
    synthetic = anchors + spread * noise
    vectors = np.ascontiguousarray(np.vstack([real, synthetic]), dtype=np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def timed_queries(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids of each query searched alone, and each search's milliseconds."""
    ids, milliseconds = [], []
    for query in queries:
        started = time.perf_counter()
        _, found = search(query.reshape(1, -1), k)
        milliseconds.append((time.perf_counter() - started) * 1000)
        ids.append(found[0])
    return np.array(ids), np.array(milliseconds)


def main(config: RetrievalBenchConfig) -> dict:
    generator = np.random.default_rng(config.seed)
    embedder = Embedder()
    started = time.monotonic()
    real = embedder.embed(paper_sentences("train"))
    query_sentences = paper_sentences("val")
    picked = generator.choice(len(query_sentences), size=min(config.queries, len(query_sentences)), replace=False)
    queries = embedder.embed([query_sentences[i] for i in picked])
    embed_seconds = time.monotonic() - started
    vectors = realistic_vectors(real, config.n_vectors, config.spread, generator)

    started = time.monotonic()
    index = VectorIndex.create(vectors.shape[1], config.index)
    index.add(vectors)
    build_seconds = time.monotonic() - started
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)

    truth, exact_ms = timed_queries(exact.search, queries, config.k)
    found, hnsw_ms = timed_queries(index.search, queries, config.k)
    recall = float(np.mean([len(set(f) & set(t)) / config.k for f, t in zip(found, truth)]))
    result = {
        "bench": "retrieval",
        "recall_at_5" if config.k == 5 else f"recall_at_{config.k}": round(recall, 4),
        **p50_p99(hnsw_ms, digits=3),
        **p50_p99(exact_ms, "exact_", digits=3),
        "speedup_p50": round(float(np.percentile(exact_ms, 50) / np.percentile(hnsw_ms, 50)), 1),
        "n_vectors": len(vectors),
        "n_real_vectors": len(real),
        "n_queries": len(queries),
        "dimension": vectors.shape[1],
        "build_seconds": round(build_seconds, 1),
        "embed_seconds": round(embed_seconds, 1),
        "index": {"kind": "faiss.IndexHNSWFlat", "metric": "inner_product", **config.index.model_dump()},
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(config_or_exit(RetrievalBenchConfig, sys.argv[1:]))
