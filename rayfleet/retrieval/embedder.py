"""Sentence embeddings with all-MiniLM-L6-v2 from its wheel (never a model hub)."""

from __future__ import annotations

import numpy as np

from rayfleet.assets import folder_fingerprint, resolve_model


class Embedder:
    """Turns texts into L2-normalized float32 vectors (cosine similarity = inner product).

    Args:
        model: a provisioned model name (``all-minilm-l6-v2``) or a local
            sentence-transformers folder.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str = "all-minilm-l6-v2", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        folder = resolve_model(model)
        self.model_name = model
        self.fingerprint = folder_fingerprint(folder)
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(folder), device="cpu")
        self.dimension = int(self._model.get_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dimension)``, each of unit length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
