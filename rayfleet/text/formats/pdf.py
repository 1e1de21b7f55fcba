"""PDF through PDFium (``pypdfium2``): text page by page, headings from the outline (bookmarks)."""

from __future__ import annotations

import re

from rayfleet.text.document import (
    MIME_PDF,
    PAGE_SEPARATOR,
    Heading,
    ParsedDocument,
    ParseError,
    first_line,
    normalize_text,
)


def parse_pdf(data: bytes) -> ParsedDocument:
    """PDF through PDFium: text page by page, headings from the outline (bookmarks)."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        if "password" in str(error).lower():
            raise ParseError("encrypted PDF: it needs a password") from error
        raise ParseError(f"corrupt PDF: {error}") from error
    try:
        pages = []
        for index in range(len(pdf)):
            page = pdf[index]
            text_page = page.get_textpage()
            pages.append(normalize_text(text_page.get_text_bounded()).strip())
            text_page.close()
            page.close()
        offsets, position = [], 0
        for page_text in pages:
            offsets.append(position)
            position += len(page_text) + len(PAGE_SEPARATOR)
        text = PAGE_SEPARATOR.join(pages)
        headings = _pdf_headings(pdf, text, offsets)
        title = (pdf.get_metadata_dict().get("Title") or "").strip() or first_line(text)
    finally:
        pdf.close()
    return ParsedDocument(text, title, MIME_PDF, "pypdfium2", offsets, headings)


def _pdf_headings(pdf, text: str, page_offsets: list[int]) -> list[Heading]:
    """Outline entries placed at the line that holds their title on their page (else the page start)."""
    headings = []
    for bookmark in pdf.get_toc():
        destination = bookmark.get_dest()
        title = " ".join(bookmark.get_title().split())
        index = destination.get_index() if destination is not None else None
        if not title or index is None or not 0 <= index < len(page_offsets):
            continue
        page_start = page_offsets[index]
        page_end = page_offsets[index + 1] if index + 1 < len(page_offsets) else len(text)
        line = re.compile(r"^[ \t]*" + r"\s+".join(map(re.escape, title.split())) + r"[ \t]*$", re.MULTILINE)
        found = line.search(text, page_start, page_end)
        headings.append(Heading(found.start() if found else page_start, bookmark.level + 1, title))
    return sorted(headings, key=lambda heading: heading.offset)
