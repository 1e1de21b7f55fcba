"""Token-aware splitting of text into pieces that fit a token budget, and document chunking.

Pieces are measured with the model's own tokenizer and cut, in order of preference,
at a paragraph break, a line break, a sentence end (Latin or CJK) or a word boundary inside the last
part of the window; only text with none of those is cut mid-word. Nothing is dropped:
joining the pieces gives back the whole text (less the whitespace at the cuts, and
less the overlap when one is asked for).

:func:`split_by_tokens` splits a plain string (used by map-reduce summarization).
:func:`chunk_document` chunks a parsed document for retrieval and Q&A generation: it
packs whole sections (between headings) into chunks while they fit, splits only the
sections that do not, and records the page range and heading of every chunk.
"""

from __future__ import annotations

import bisect
import re
from array import array
from dataclasses import dataclass
from typing import Protocol, Sequence

from rayfleet.text.scripts import CJK_SENTENCE_ENDS

# Boundaries, best first; each matches the separator that ends a piece.
# A sentence ends at . ! ? before a space, or at a full-width 。！？ (CJK writes no space after it).
SENTENCE_BOUNDARY = re.compile(f"(?<=[.!?])\\s+|(?<=[{CJK_SENTENCE_ENDS}])\\s*")
BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"), SENTENCE_BOUNDARY, re.compile(r"\s+"))
# A cut is looked for only in the last part of a window, so pieces stay near full size.
SEARCH_FRACTION = 0.3
# A long text is tokenized this many characters at a time: the tokenizer's per-token Python lists
# of a whole 20 MB file took ~4.5 GB, the offsets kept here take 16 bytes a token.
TOKENIZE_WINDOW_CHARS = 1 << 16


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs) -> dict: ...


@dataclass(frozen=True)
class TokenOffsets:
    """Where each token of a text starts and ends (character offsets)."""

    starts: Sequence[int]
    ends: Sequence[int]

    def first_ending_after(self, offset: int) -> int:
        """Index of the first token that ends after ``offset``."""
        return bisect.bisect_right(self.ends, offset)

    def count(self, start: int, end: int) -> int:
        """Tokens that overlap ``[start, end)``; one straddling an edge counts for both sides,
        so sums never undercount."""
        return max(0, bisect.bisect_left(self.starts, end) - bisect.bisect_right(self.ends, start))


def token_offsets(tokenizer: Tokenizer, text: str) -> TokenOffsets:
    """The token spans of ``text`` (needs a fast tokenizer), tokenized a window at a time, each cut
    before a space (where tokenizers split words anyway; text without spaces is cut where the window ends)."""
    starts, ends = array("q"), array("q")
    position = 0
    while position < len(text):
        cut = tokenize_window_end(text, position)
        window = text[position:cut]
        # verbose=False: only counted, so transformers' "indexing errors" warning (a window past the model's
        # length, e.g. MiniLM's 512) would mislead
        encoded = tokenizer(window, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True,
                            verbose=False)  # fmt: skip
        for start, end in encoded["offset_mapping"]:
            starts.append(position + start)
            ends.append(position + end)
        position = cut
    return TokenOffsets(starts, ends)


def tokenize_window_end(text: str, start: int) -> int:
    """Where the tokenizer window that begins at ``start`` ends."""
    end = start + TOKENIZE_WINDOW_CHARS
    if end >= len(text):
        return len(text)
    space = text.rfind(" ", start + TOKENIZE_WINDOW_CHARS // 2, end)
    return space if space > start else end


def token_end_offsets(tokenizer: Tokenizer, text: str) -> Sequence[int]:
    """The character offset where each token of ``text`` ends (needs a fast tokenizer)."""
    return token_offsets(tokenizer, text).ends


def split_spans(
    text: str, tokens: TokenOffsets, start: int, end: int, max_tokens: int, overlap_tokens: int = 0
) -> list[tuple[int, int]]:
    """Cut ``text[start:end]`` into spans of at most ``max_tokens`` tokens, at the best boundaries.

    Each span after the first begins ``overlap_tokens`` tokens before the previous cut.
    Spans are trimmed of surrounding whitespace; blank ones are left out.

    Raises:
        ValueError: ``max_tokens`` is not positive, or the overlap is not smaller than it.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens}")
    first = tokens.first_ending_after(start)
    last = bisect.bisect_left(tokens.starts, end)  # tokens [first, last) start before `end`
    spans: list[tuple[int, int]] = []
    start_char, start_token = start, first
    while last - start_token > max_tokens:
        window_end = tokens.ends[start_token + max_tokens - 1]
        search_from = tokens.ends[start_token + int(max_tokens * (1 - SEARCH_FRACTION))]
        cut = best_cut(text, search_from, window_end) or window_end
        spans.append((start_char, cut))
        after_cut = tokens.first_ending_after(cut)
        # Step back for the overlap, but always move forward by at least one token.
        start_token = max(after_cut - overlap_tokens, start_token + 1) if overlap_tokens else after_cut
        start_char = min(tokens.starts[start_token], cut) if overlap_tokens else cut
    spans.append((start_char, end))
    return [trimmed for span in spans if (trimmed := trim_span(text, *span))]


def trim_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``(start, end)`` without leading and trailing whitespace; None when nothing is left."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    lead = len(piece) - len(piece.lstrip())
    return start + lead, start + lead + len(stripped)


def split_by_tokens(tokenizer: Tokenizer, text: str, max_tokens: int) -> list[str]:
    """Split ``text`` into pieces of at most ``max_tokens`` tokens each.

    Raises:
        ValueError: ``max_tokens`` is not positive.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    return [
        text[start:end] for start, end in split_spans(text, token_offsets(tokenizer, text), 0, len(text), max_tokens)
    ]


def best_cut(text: str, search_from: int, window_end: int) -> int | None:
    """The character offset just after the best boundary in ``text[search_from:window_end]``."""
    for boundary in BOUNDARIES:
        last = None
        for match in boundary.finditer(text, search_from, window_end):
            last = match
        if last is not None and last.end() > search_from:
            return last.end()
    return None


@dataclass(frozen=True)
class SectionStart:
    """Where a section starts and its heading (what :class:`rayfleet.text.parsing.Heading` provides)."""

    offset: int
    title: str


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: its span in the text, its size, pages (1-based) and heading."""

    ordinal: int
    text: str
    token_count: int
    char_start: int
    char_end: int
    page_start: int
    page_end: int
    heading: str | None


def sections(text_length: int, headings: Sequence[SectionStart]) -> list[tuple[int, int, str | None]]:
    """``(start, end, heading)`` spans covering the whole text, one per heading (and one before the first)."""
    starts = sorted({min(max(heading.offset, 0), text_length): heading.title for heading in headings}.items())
    if not starts or starts[0][0] > 0:
        starts.insert(0, (0, None))
    ends = [offset for offset, _ in starts[1:]] + [text_length]
    return [(start, end, title) for (start, title), end in zip(starts, ends) if end > start]


def chunk_document(
    tokenizer: Tokenizer,
    text: str,
    max_tokens: int,
    overlap_tokens: int = 0,
    page_offsets: Sequence[int] = (0,),
    headings: Sequence[SectionStart] = (),
) -> list[Chunk]:
    """Chunk a document at section boundaries where it can, at paragraph ones where it must.

    Consecutive sections are packed into one chunk while their tokens fit in
    ``max_tokens``; a section larger than that is split with :func:`split_spans`
    (with ``overlap_tokens`` of overlap between its pieces). Token counts are
    measured again on each chunk's own text, so they are exact.
    """
    tokens = token_offsets(tokenizer, text)
    spans = [trimmed + (heading,)
             for start, end, heading in pack_sections(text, tokens, headings, max_tokens, overlap_tokens)
             if (trimmed := trim_span(text, start, end))]  # fmt: skip
    texts = [text[start:end] for start, end, _ in spans]
    encoded = (
        tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
        if texts
        else []
    )
    counts = [len(ids) for ids in encoded]
    return [
        Chunk(ordinal, piece, count, start, end, page_of(page_offsets, start), page_of(page_offsets, end - 1), heading)
        for ordinal, (piece, count, (start, end, heading)) in enumerate(zip(texts, counts, spans))
    ]


def pack_sections(
    text: str, tokens: TokenOffsets, headings: Sequence[SectionStart], max_tokens: int, overlap_tokens: int
) -> list[tuple[int, int, str | None]]:
    """``(start, end, heading)`` of each chunk: runs of whole sections that fit, or pieces of one that does not."""
    spans: list[tuple[int, int, str | None]] = []
    packed_tokens = 0  # tokens in spans[-1] while it is still open to more sections, else -1
    for start, end, heading in sections(len(text), headings):
        size = tokens.count(start, end)
        if packed_tokens >= 0 and spans and packed_tokens + size <= max_tokens:
            spans[-1] = (spans[-1][0], end, spans[-1][2])
            packed_tokens += size
        elif size <= max_tokens:
            spans.append((start, end, heading))
            packed_tokens = size
        else:
            pieces = split_spans(text, tokens, start, end, max_tokens, overlap_tokens)
            spans += [(piece_start, piece_end, heading) for piece_start, piece_end in pieces]
            packed_tokens = -1
    return spans


def page_of(page_offsets: Sequence[int], offset: int) -> int:
    """The 1-based page that holds character ``offset``."""
    return max(bisect.bisect_right(page_offsets, offset), 1)
