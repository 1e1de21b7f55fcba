"""Token-aware splitting of text into pieces that fit a token budget.

Pieces are measured with the model's own tokenizer and cut, in order of preference,
at a paragraph break, a line break, a sentence end or a word boundary inside the last
part of the window; only text with none of those is cut mid-word. Nothing is dropped:
joining the pieces gives back the whole text (less the whitespace at the cuts).
"""

from __future__ import annotations

import re
from typing import Protocol

# Boundaries, best first; each matches the separator that ends a piece.
BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+"))
# A cut is looked for only in the last part of a window, so pieces stay near full size.
SEARCH_FRACTION = 0.3


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs) -> dict: ...


def token_end_offsets(tokenizer: Tokenizer, text: str) -> list[int]:
    """The character offset where each token of ``text`` ends (needs a fast tokenizer)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [end for _, end in encoded["offset_mapping"]]


def split_by_tokens(tokenizer: Tokenizer, text: str, max_tokens: int) -> list[str]:
    """Split ``text`` into pieces of at most ``max_tokens`` tokens each.

    Raises:
        ValueError: ``max_tokens`` is not positive.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    ends = token_end_offsets(tokenizer, text)
    pieces: list[str] = []
    start_char, start_token = 0, 0
    while len(ends) - start_token > max_tokens:
        window_end = ends[start_token + max_tokens - 1]
        search_from = ends[start_token + int(max_tokens * (1 - SEARCH_FRACTION))]
        cut = best_cut(text, search_from, window_end) or window_end
        piece = text[start_char:cut].strip()
        if piece:
            pieces.append(piece)
        start_char = cut
        # The next piece starts at the first token that ends after the cut.
        while start_token < len(ends) and ends[start_token] <= cut:
            start_token += 1
    tail = text[start_char:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def best_cut(text: str, search_from: int, window_end: int) -> int | None:
    """The character offset just after the best boundary in ``text[search_from:window_end]``."""
    for boundary in BOUNDARIES:
        last = None
        for match in boundary.finditer(text, search_from, window_end):
            last = match
        if last is not None and last.end() > search_from:
            return last.end()
    return None
