"""Embedding and vector search over document chunks: what the RAG path retrieves from.

- :class:`Embedder`: all-MiniLM-L6-v2 (from its wheel) turning texts into L2-normalized
  vectors, so cosine similarity is an inner product.
- :class:`VectorIndex`: a FAISS HNSW index over those vectors, grown incrementally.
- :mod:`rayfleet.retrieval.store`: index versions in storage (index, rows, manifest).
- :class:`Retriever`: loads the latest version and answers top-k queries, optionally
  restricted to some documents or sources.
- :class:`rayfleet.retrieval.latest.LatestRetriever`: a retriever that follows new versions
  while a server runs.
"""

import logging

# faiss logs at INFO every CPU-specific build it tries and cannot load, with a ModuleNotFoundError
# ("No module named 'faiss.swigfaiss_avx512'"): normal, and alarming in a job's log.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

from rayfleet.retrieval.embedder import Embedder  # noqa: E402  (after the logger is quietened)
from rayfleet.retrieval.index import IndexParams, VectorIndex  # noqa: E402
from rayfleet.retrieval.retriever import Hit, Retriever  # noqa: E402

__all__ = ["Embedder", "Hit", "IndexParams", "Retriever", "VectorIndex"]
