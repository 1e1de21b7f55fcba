"""PDF through PDFium (``pypdfium2``): text page by page, headings from the outline (bookmarks).

A scanned page is rendered and read by OCR (:mod:`rayfleet.text.ocr`) unless the OCR config
turns it off: a page holding a picture and (almost) no text layer, or a page mostly covered by
a picture whose text layer is only a stamp or a page number (see :func:`needs_ocr`). Running
headers and footers (the title atop every page, ``Page 3 of 40``, a bare page number) are kept
only where they first appear (:func:`without_running_lines`), so they fill no chunk or summary.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

from rayfleet.text.document import (
    MIME_PDF,
    Heading,
    ParsedDocument,
    ParseError,
    first_line,
    joined_pages,
    normalize_text,
)
from rayfleet.text.ocr import OcrConfig, read_image

logger = logging.getLogger(__name__)
# A picture over at least this share of the page makes the page a scan.
SCAN_COVERAGE = 0.5
# A line among the first or last EDGE_LINES of a page that recurs there, digits aside, on at least
# RUNNING_LINE_SHARE of the pages (and on RUNNING_LINE_MIN_PAGES) is a running header or footer.
# A third, not half: books alternate them between left and right pages ("12 Title", "Title 13").
EDGE_LINES = 2
RUNNING_LINE_SHARE = 0.3
RUNNING_LINE_MIN_PAGES = 4


def parse_pdf(data: bytes, ocr: OcrConfig | None = None) -> ParsedDocument:
    """PDF through PDFium: text page by page (scanned pages through OCR), headings from the outline."""
    import pypdfium2 as pdfium

    ocr = ocr or OcrConfig()
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        if "password" in str(error).lower():
            raise ParseError("encrypted PDF: it needs a password") from error
        raise ParseError(f"corrupt PDF: {error}") from error
    try:
        pages, scanned = [], 0
        for index in range(len(pdf)):
            page = pdf[index]
            text_page = page.get_textpage()
            text = normalize_text(text_page.get_text_bounded()).strip()
            text_page.close()
            if needs_ocr(page, text, ocr):
                read = ocr_page(page, index, ocr)
                text, scanned = read or text, scanned + bool(read)
            pages.append(text)
            page.close()
        text, offsets = joined_pages(without_running_lines(pages))
        headings = _pdf_headings(pdf, text, offsets)
        title = (pdf.get_metadata_dict().get("Title") or "").strip() or first_line(text)
    finally:
        pdf.close()
    return ParsedDocument(text, title, MIME_PDF, "pypdfium2+rapidocr" if scanned else "pypdfium2", offsets, headings)


def without_running_lines(pages: list[str]) -> list[str]:
    """The pages with their running headers and footers kept only where they first appear: lines among
    a page's first or last :data:`EDGE_LINES` that recur there, the same but for their digits (page
    numbers), on at least :data:`RUNNING_LINE_SHARE` of the pages."""
    counts = Counter(key for page in pages for key in {key for _, key in _edge_lines(page)})
    needed = max(RUNNING_LINE_MIN_PAGES, RUNNING_LINE_SHARE * len(pages))
    running = {key for key, count in counts.items() if count >= needed}
    if not running:
        return pages
    seen: set[str] = set()
    cleaned = []
    for page in pages:
        lines = page.split("\n")
        dropped = set()
        for index, key in _edge_lines(page):
            if key in running and key in seen:
                dropped.add(index)
            seen.add(key)
        cleaned.append("\n".join(line for index, line in enumerate(lines) if index not in dropped).strip())
    return cleaned


def _edge_lines(page: str) -> list[tuple[int, str]]:
    """A page's first and last non-blank lines (:data:`EDGE_LINES` each, fewer on a page of few lines,
    whose middle is body), with their line numbers and their keys: where they stand (``top`` or
    ``bottom``) and their text, spacing and case aside, every number one ``#``."""
    lines = [(index, line) for index, line in enumerate(page.split("\n")) if line.strip()]
    edge = max(1, min(EDGE_LINES, len(lines) // 3))
    return [(index, f"top:{_line_key(line)}") for index, line in lines[:edge]] + [
        (index, f"bottom:{_line_key(line)}") for index, line in lines[-edge:]
    ]


def _line_key(line: str) -> str:
    return re.sub(r"\d+", "#", " ".join(line.split()).casefold())


def ocr_page(page, index: int, ocr: OcrConfig) -> str:
    """The page rendered as a picture and read by OCR ('' if PDFium cannot render it: its text layer stays)."""
    import pypdfium2 as pdfium

    try:
        picture = page.render(scale=render_scale(page, ocr)).to_pil()
    except pdfium.PdfiumError as error:
        logger.warning("page %d could not be rendered for OCR (%s); its text layer is kept", index + 1, error)
        return ""
    return read_image(picture, ocr)


def render_scale(page, ocr: OcrConfig) -> float:
    """Pixels per PDF point for OCR: ``ocr.dpi``, less for a page so large it would pass ``ocr.max_pixels``."""
    width, height = page.get_size()
    return min(ocr.dpi / 72, (ocr.max_pixels / max(width * height, 1.0)) ** 0.5)


def needs_ocr(page, text: str, ocr: OcrConfig) -> bool:
    """A page to OCR (OCR on): one holding a picture with fewer than ``ocr.min_text_chars`` text characters,
    or a scan (a picture over half the page) whose text layer is shorter than ``ocr.scan_text_chars``."""
    import pypdfium2.raw as pdfium_c

    characters = len("".join(text.split()))
    if not ocr.enabled or characters >= max(ocr.min_text_chars, ocr.scan_text_chars):
        return False
    pictures = list(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=8))
    if not pictures:
        return False
    return characters < ocr.min_text_chars or picture_coverage(page, pictures) >= SCAN_COVERAGE


def picture_coverage(page, pictures) -> float:
    """The share of the page the pictures cover (their bounds summed, at most 1)."""
    width, height = page.get_size()
    covered = 0.0
    for picture in pictures:
        left, bottom, right, top = picture.get_bounds()
        covered += max(min(right, width) - max(left, 0), 0) * max(min(top, height) - max(bottom, 0), 0)
    return min(covered / max(width * height, 1.0), 1.0)


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
