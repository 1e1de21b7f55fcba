"""Token-aware splitting: bounded, lossless, and cut at natural boundaries."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from rayfleet.text.chunking import split_by_tokens


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def squash(text):
    return re.sub(r"\s+", "", text)


def test_short_text_is_one_piece(tokenizer):
    assert split_by_tokens(tokenizer, "A short text.", 50) == ["A short text."]


def test_pieces_fit_and_lose_nothing(tokenizer):
    text = "\n\n".join(f"Paragraph {i}. " + "Some sentence with words in it. " * (i % 7 + 1) for i in range(40))
    pieces = split_by_tokens(tokenizer, text, 64)
    assert len(pieces) > 5
    assert all(n_tokens(tokenizer, piece) <= 64 for piece in pieces)
    assert squash("".join(pieces)) == squash(text)


def test_prefers_paragraph_boundaries(tokenizer):
    paragraph = "This sentence belongs to one paragraph. " * 5
    text = "\n\n".join([paragraph.strip()] * 6)
    pieces = split_by_tokens(tokenizer, text, n_tokens(tokenizer, paragraph) * 2 + 5)
    assert all(piece.endswith("paragraph.") for piece in pieces)


def test_text_without_spaces_is_still_split(tokenizer):
    text = "x" * 5000
    pieces = split_by_tokens(tokenizer, text, 100)
    assert all(n_tokens(tokenizer, piece) <= 100 for piece in pieces)
    assert "".join(pieces) == text


def test_rejects_nonpositive_budget(tokenizer):
    with pytest.raises(ValueError):
        split_by_tokens(tokenizer, "text", 0)
