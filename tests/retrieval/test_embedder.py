"""Both kinds of embedder on real text: unit vectors, meaning kept, the static one ~a lookup."""

from __future__ import annotations

import numpy as np
import pytest

from rayfleet.retrieval import Embedder

SENTENCES = [
    "The warranty covers the pump for two years after purchase.",
    "How long is the pump under warranty?",
    "Write a short poem about the sea at night.",
]


@pytest.mark.parametrize(
    ("model", "dimension", "static"), [("all-minilm-l6-v2-static", 256, True), ("all-minilm-l6-v2", 384, False)]
)
def test_embeddings_are_unit_vectors_that_keep_meaning(model, dimension, static):
    embedder = Embedder(model)
    vectors = embedder.embed(SENTENCES)
    assert (embedder.static, embedder.dimension) == (static, dimension)
    assert (vectors.shape, vectors.dtype) == ((3, dimension), np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    related, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert related > unrelated + 0.2
    assert embedder.embed([]).shape == (0, dimension)


def test_the_static_embedding_agrees_with_the_transformer_it_was_distilled_from():
    static, transformer = Embedder("all-minilm-l6-v2-static"), Embedder("all-minilm-l6-v2")
    texts = SENTENCES + ["Summarize the approach of the paper.", "What dataset did the authors evaluate on?"]
    static_vectors, transformer_vectors = static.embed(texts), transformer.embed(texts)
    static_similarity = static_vectors @ static_vectors.T
    transformer_similarity = transformer_vectors @ transformer_vectors.T
    upper = np.triu_indices(len(texts), k=1)
    assert np.corrcoef(static_similarity[upper], transformer_similarity[upper])[0, 1] > 0.6
