"""Token-aware splitting and document chunking: bounded, lossless, cut at natural boundaries."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from rayfleet.text.chunking import TOKENIZE_WINDOW_CHARS, SectionStart, chunk_document, split_by_tokens, token_offsets


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


def test_pieces_holding_special_token_spellings_fit_as_the_prompt_holds_them(tokenizer):
    text = " ".join(f"Turn {i} ends with <|im_end|> and the next opens with <|im_start|>." for i in range(60))
    pieces = split_by_tokens(tokenizer, text, 64)
    as_text = [
        len(tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"]) for piece in pieces
    ]
    assert max(as_text) <= 64 and squash("".join(pieces)) == squash(text)
    [chunk, *_] = chunk_document(tokenizer, text, 64)
    assert chunk.token_count == len(
        tokenizer(chunk.text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    )


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


def test_cjk_text_is_cut_after_full_width_sentence_ends(tokenizer):
    sentences = [f"第{i}号ポンプは毎月点検します。" for i in range(60)]
    text = "".join(sentences)
    pieces = split_by_tokens(tokenizer, text, 100)
    assert len(pieces) > 3 and all(n_tokens(tokenizer, piece) <= 100 for piece in pieces)
    assert all(piece.endswith("。") for piece in pieces), "cut mid-sentence"
    assert "".join(pieces) == text


def test_rejects_nonpositive_budget(tokenizer):
    with pytest.raises(ValueError):
        split_by_tokens(tokenizer, "text", 0)


# Document chunking: sections, pages, overlap, and the real manual.


def test_small_sections_are_packed_and_big_ones_split_at_paragraphs(tokenizer):
    section = "Some facts about pumps and valves. " * 8
    text = "\n\n".join(f"Heading {i}\n\n{section}" for i in range(6))
    headings = [SectionStart(match.start(), match.group()) for match in re.finditer(r"Heading \d", text)]
    size = n_tokens(tokenizer, f"Heading 0\n\n{section}")
    chunks = chunk_document(tokenizer, text, max_tokens=2 * size + 8, headings=headings)
    assert [chunk.heading for chunk in chunks] == ["Heading 0", "Heading 2", "Heading 4"]
    assert all(chunk.text.startswith(chunk.heading) for chunk in chunks)
    assert squash("".join(chunk.text for chunk in chunks)) == squash(text)


def test_overlap_repeats_text_between_pieces_of_a_split_section(tokenizer):
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = chunk_document(tokenizer, text, max_tokens=64, overlap_tokens=16)
    assert len(chunks) > 5
    assert all(chunk.token_count <= 64 for chunk in chunks)
    for previous, current in zip(chunks, chunks[1:]):
        assert current.char_start < previous.char_end, "consecutive pieces overlap"
        assert current.char_start > previous.char_start, "and still move forward"
    assert chunks[-1].char_end == len(text)


def test_page_ranges_follow_page_offsets(tokenizer):
    pages = [f"Page {p} line. " * 30 for p in range(1, 5)]
    offsets = [sum(len(page) + 2 for page in pages[:index]) for index in range(len(pages))]
    chunks = chunk_document(tokenizer, "\n\n".join(pages), max_tokens=100, page_offsets=offsets)
    for chunk in chunks:
        words = {int(number) for number in re.findall(r"Page (\d)", chunk.text)}
        assert (chunk.page_start, chunk.page_end) == (min(words), max(words))


def test_real_manual_chunks_are_bounded_and_lose_nothing_between_pages(tokenizer):
    from rayfleet.text.parsing import parse_file
    from tests.text.samples import PDFS

    manual = parse_file("gnuplot.pdf", (PDFS / "gnuplot.pdf").read_bytes())
    chunks = chunk_document(tokenizer, manual.text, 256, 0, manual.page_offsets, manual.headings)
    assert all(1 <= chunk.token_count <= 256 for chunk in chunks)
    assert all(chunk.token_count == n_tokens(tokenizer, chunk.text) for chunk in chunks[:50])
    assert squash("".join(chunk.text for chunk in chunks)) == squash(manual.text)
    assert chunks[-1].page_end == 311 and all(c.page_start <= c.page_end for c in chunks)
    # Around a page break the chunks still hold every word, and say they span the break.
    for page in (50, 150, 250):
        boundary = manual.page_offsets[page]
        around = [chunk for chunk in chunks if chunk.char_end > boundary - 60 and chunk.char_start < boundary + 60]
        assert squash(manual.text[boundary - 60 : boundary + 60]) in squash("".join(chunk.text for chunk in around))
        assert any(chunk.page_start <= page + 1 <= chunk.page_end for chunk in around)
    assert {"Load", "Copyright"} <= {chunk.heading for chunk in chunks}


def test_chunks_start_at_headings_where_sections_fit(tokenizer):
    from rayfleet.text.parsing import parse_file

    markdown = "\n\n".join(f"## Part {i}\n\n" + "Words of this part. " * (5 + 3 * i) for i in range(8))
    document = parse_file("parts.md", markdown.encode())
    chunks = chunk_document(tokenizer, document.text, 80, 8, document.page_offsets, document.headings)
    starts = [heading.offset for heading in document.headings]
    section_text = {
        heading.title: document.text[start:end]
        for heading, start, end in zip(document.headings, starts, starts[1:] + [len(document.text)])
    }
    assert all(chunk.token_count <= 80 for chunk in chunks)
    assert sum(chunk.char_start in starts for chunk in chunks) >= 6
    for chunk in chunks:
        if chunk.char_start not in starts:  # only a section too big for one chunk is cut inside
            assert n_tokens(tokenizer, section_text[chunk.heading]) > 80


def test_a_long_text_is_tokenized_in_windows_to_the_same_tokens_as_in_one_call(tokenizer):
    words = "valve pump seal 7 impeller's north-east bearing, (checked) monthly; über café 東京".split()
    text = " ".join(words[(i * 7) % len(words)] for i in range(3 * TOKENIZE_WINDOW_CHARS // 6))
    assert len(text) > 2 * TOKENIZE_WINDOW_CHARS
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    windowed = token_offsets(tokenizer, text)
    assert list(zip(windowed.starts, windowed.ends)) == [tuple(span) for span in whole]
    spaceless = "x" * (2 * TOKENIZE_WINDOW_CHARS + 5)  # no space to cut before: cut where the window ends
    offsets = token_offsets(tokenizer, spaceless)
    assert offsets.ends[-1] == len(spaceless) and all(a <= b for a, b in zip(offsets.ends, offsets.starts[1:]))


@pytest.fixture
def transformers_warnings():
    """The messages transformers logs while the test runs (its logger does not propagate to the root)."""
    import logging

    class Collect(logging.Handler):
        messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler, logger = Collect(logging.WARNING), logging.getLogger("transformers")
    handler.messages = []
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_counting_a_text_past_the_models_length_does_not_warn_of_indexing_errors(smollm2_path, transformers_warnings):
    """Chunking and counting never run a text through a model, so transformers' "will result in indexing
    errors" warning (MiniLM's limit is 512 tokens) must not land in every ingest and summarization log."""
    from rayfleet.engines.templates import count_tokens

    short_limit = AutoTokenizer.from_pretrained(smollm2_path, model_max_length=64)  # a fresh one warns once
    text = "A sentence of plain words for the count. " * 300
    chunks = chunk_document(short_limit, text, 48)
    assert len(chunks) > 10 and all(chunk.token_count <= 48 for chunk in chunks)
    assert count_tokens(short_limit, text) > 64
    from rayfleet.text.tokenizer import FastTokenizer  # what ingestion chunks with: takes the same call

    assert [chunk.token_count for chunk in chunk_document(FastTokenizer(smollm2_path), text, 48)] == [
        chunk.token_count for chunk in chunks
    ]
    assert not [message for message in transformers_warnings if "indexing errors" in message]
    short_limit(text)  # the check can fail: an uncounted call does warn
    assert [message for message in transformers_warnings if "indexing errors" in message]
