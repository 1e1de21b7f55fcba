"""Sentence embeddings from provisioned models (never a model hub).

Two kinds of model, one interface:

- a sentence-transformers folder, e.g. ``all-minilm-l6-v2`` from its wheel: a transformer
  forward pass per batch (the retrieval index uses it);
- a model2vec static model, e.g. ``all-minilm-l6-v2-static`` distilled from it at setup:
  a token lookup and a mean, ~40× cheaper a prompt (the router uses it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rayfleet.assets import folder_fingerprint, resolve_model


def is_static_model(folder: Path) -> bool:
    """Whether ``folder`` holds a model2vec static embedding model."""
    config = folder / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "model2vec"


class Embedder:
    """Turns texts into L2-normalized float32 vectors (cosine similarity = inner product).

    Args:
        model: a provisioned model name (``all-minilm-l6-v2``, ``all-minilm-l6-v2-static``)
            or a local sentence-transformers or model2vec folder.
        batch_size: texts per forward pass (sentence-transformers models).
    """

    def __init__(self, model: str = "all-minilm-l6-v2", batch_size: int = 64):
        folder = resolve_model(model)
        self.model_name = model
        self.fingerprint = folder_fingerprint(folder)
        self.batch_size = batch_size
        self.static = is_static_model(folder)
        if self.static:
            from model2vec import StaticModel

            self._model = StaticModel.from_pretrained(str(folder))
            self.dimension = int(self._model.dim)
        else:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(folder), device="cpu")
            self.dimension = int(self._model.get_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dimension)``, each of unit length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.static:
            vectors = self._model.encode(list(texts), show_progress_bar=False).astype(np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
