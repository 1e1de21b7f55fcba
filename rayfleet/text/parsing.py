"""Turning files (PDF, HTML, Markdown, plain text, DOCX, PPTX) into text with pages and headings.

Each format goes through a well-kept parser: PDFium (``pypdfium2``) for PDF, lxml via
Beautiful Soup for HTML, ``markdown-it-py`` for Markdown structure, ``python-docx`` for
DOCX, ``python-pptx`` for PPTX and ``charset-normalizer`` for text in an unknown encoding.
Every parser returns a :class:`ParsedDocument`: the text, where each page starts in it
(PDF pages, PPTX slides; one page for the rest), and the headings found, with their
offsets, for chunking.

A file that cannot give usable text raises :class:`ParseError` with a reason a person
can act on (corrupt, encrypted, no extractable text, unknown type)::

    document = parse_file("manual.pdf", data)
    document.page_count, document.text[document.page_offsets[3]:]
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from typing import Callable

MIME_PDF = "application/pdf"
MIME_HTML = "text/html"
MIME_MARKDOWN = "text/markdown"
MIME_TEXT = "text/plain"
MIME_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MIME_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
OOXML_MAIN_PARTS = {"word/document.xml": MIME_DOCX, "ppt/presentation.xml": MIME_PPTX}
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc/.ppt, and password-protected Office files

EXTENSIONS = {
    ".pdf": MIME_PDF,
    ".html": MIME_HTML,
    ".htm": MIME_HTML,
    ".xhtml": MIME_HTML,
    ".md": MIME_MARKDOWN,
    ".markdown": MIME_MARKDOWN,
    ".txt": MIME_TEXT,
    ".text": MIME_TEXT,
    ".docx": MIME_DOCX,
    ".pptx": MIME_PPTX,
}
# Pages are joined with a blank line, so a page break is also a paragraph break for chunking.
PAGE_SEPARATOR = "\n\n"
TITLE_MAX_CHARS = 200


class ParseError(ValueError):
    """A file that gives no usable text; the message is the reason, for the errors table."""


@dataclass(frozen=True)
class Heading:
    """A section heading: where it starts in the text, its depth (1 = top) and its words."""

    offset: int
    level: int
    title: str


@dataclass
class ParsedDocument:
    """The text of one file, with its page starts and headings."""

    text: str
    title: str | None
    mime_type: str
    parser: str
    page_offsets: list[int] = field(default_factory=lambda: [0])
    headings: list[Heading] = field(default_factory=list)

    @property
    def page_count(self) -> int:
        return len(self.page_offsets)


def detect_mime_type(name: str, data: bytes) -> str | None:
    """The MIME type of a file, by extension, else by its first bytes; None when unknown."""
    extension = posixpath.splitext(name.lower())[1]
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    head = data[:1024]
    if head.startswith(b"%PDF-"):
        return MIME_PDF
    if re.match(rb"^(\xef\xbb\xbf)?\s*<(!doctype html|html)", head, re.IGNORECASE):
        return MIME_HTML
    if head.startswith(b"PK\x03\x04"):
        return _ooxml_type(data)
    return None


def _ooxml_type(data: bytes) -> str | None:
    """DOCX or PPTX by the main part the zip holds; None for other zips."""
    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except zipfile.BadZipFile:
        return None
    return next((mime for part, mime in OOXML_MAIN_PARTS.items() if part in names), None)


def _office_open_error(kind: str, data: bytes, error: Exception) -> ParseError:
    if data.startswith(OLE_MAGIC):
        return ParseError(
            f"not a {kind} zip package: a password-protected file or a legacy binary Office file; "
            f"remove the password or save it as {kind}"
        )
    return ParseError(f"corrupt {kind}: {type(error).__name__}: {error}")


def parse_file(name: str, data: bytes) -> ParsedDocument:
    """Parse one file's bytes by its type.

    Raises:
        ParseError: unknown type, corrupt or encrypted file, or no extractable text.
    """
    mime_type = detect_mime_type(name, data)
    if mime_type is None:
        supported = ", ".join(sorted(EXTENSIONS))
        raise ParseError(
            f"unknown file type {posixpath.splitext(name)[1] or '(no extension)'!r}; supported: {supported}"
        )
    document = PARSERS[mime_type](data)
    if not document.text.strip():
        raise ParseError("no extractable text" + (" (a scanned PDF needs OCR first)" if mime_type == MIME_PDF else ""))
    return document


def normalize_text(text: str) -> str:
    """Unix newlines, no NULs or PDFium's soft-hyphen markers, no trailing spaces on lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").replace("\ufffe", "").replace("\x02", "")
    return re.sub(r"[ \t]+\n", "\n", text)


def first_line(text: str) -> str | None:
    """The first non-blank line, as a fallback title."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:TITLE_MAX_CHARS]
    return None


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


class _TextBuilder:
    """Collects paragraphs and headings while walking a tree; joins them with blank lines."""

    def __init__(self):
        self.paragraphs: list[str] = []
        self.headings: list[Heading] = []
        self.length = 0
        self.inline: list[str] = []

    def add_inline(self, text: str) -> None:
        self.inline.append(text)

    def end_block(self) -> None:
        self.add_paragraph(" ".join("".join(self.inline).split()))
        self.inline = []

    def add_paragraph(self, paragraph: str) -> int | None:
        """Append a paragraph (blank ones are skipped); returns its offset."""
        if not paragraph.strip():
            return None
        offset = self.length + (len(PAGE_SEPARATOR) if self.paragraphs else 0)
        self.paragraphs.append(paragraph)
        self.length = offset + len(paragraph)
        return offset

    def add_heading(self, level: int, title: str) -> None:
        self.end_block()
        offset = self.add_paragraph(title)
        if offset is not None:
            self.headings.append(Heading(offset, level, title))

    def next_offset(self) -> int:
        """Where the next paragraph will start."""
        self.end_block()
        return self.length + (len(PAGE_SEPARATOR) if self.paragraphs else 0)

    def text(self) -> str:
        self.end_block()
        return PAGE_SEPARATOR.join(self.paragraphs)


HTML_SKIPPED = {"script", "style", "noscript", "template", "svg", "head", "nav", "iframe", "object", "canvas"}
HTML_BLOCKS = {
    "address", "article", "aside", "blockquote", "body", "dd", "details", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "header", "hr", "li", "main", "ol", "p", "section", "summary", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "caption",
}  # fmt: skip
HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def parse_html(data: bytes) -> ParsedDocument:
    """HTML through lxml (Beautiful Soup): visible text by block, headings h1-h6, scripts and nav dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    title_tag = soup.find("title")
    builder = _TextBuilder()
    try:
        _walk_html(soup.body or soup, builder)
    except RecursionError as error:
        raise ParseError("HTML nested too deeply to parse") from error
    text = builder.text()
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    if not title:
        title = builder.headings[0].title if builder.headings else first_line(text)
    return ParsedDocument(text, title, MIME_HTML, "beautifulsoup4+lxml", [0], builder.headings)


def _walk_html(node, builder: _TextBuilder) -> None:
    from bs4 import NavigableString, Tag
    from bs4.element import PreformattedString

    for child in node.children:
        if isinstance(child, PreformattedString):  # comments, CDATA, doctype
            continue
        if isinstance(child, NavigableString):
            builder.add_inline(str(child))
        elif isinstance(child, Tag) and child.name not in HTML_SKIPPED:
            if child.name in HTML_HEADINGS:
                builder.add_heading(HTML_HEADINGS[child.name], " ".join(child.get_text(" ").split()))
            elif child.name == "pre":
                builder.end_block()
                builder.add_paragraph(normalize_text(child.get_text()).strip("\n"))
            elif child.name == "br":
                builder.add_inline("\n")
            else:
                is_block = child.name in HTML_BLOCKS
                if is_block:
                    builder.end_block()
                _walk_html(child, builder)
                if is_block:
                    builder.end_block()


def decode_text(data: bytes) -> str:
    """Bytes to text: UTF-8 (with or without BOM), else the encoding charset-normalizer detects.

    Raises:
        ParseError: binary content, or no encoding fits.
    """
    if b"\x00" in data[:8192]:
        raise ParseError("binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError("text in an undetectable encoding")
    return str(best)


def parse_markdown(data: bytes) -> ParsedDocument:
    """Markdown: the source text as it is (readable to a model), headings from markdown-it's parse."""
    from markdown_it import MarkdownIt

    text = normalize_text(decode_text(data))
    line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
    tokens = MarkdownIt("commonmark").parse(text)
    headings = []
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open" and opening.map:
            headings.append(Heading(line_starts[opening.map[0]], int(opening.tag[1]), inline.content.strip()))
    top = min(headings, key=lambda heading: (heading.level, heading.offset)) if headings else None
    title = top.title if top else first_line(text)
    return ParsedDocument(text, title, MIME_MARKDOWN, "markdown-it-py", [0], headings)


def parse_text(data: bytes) -> ParsedDocument:
    """Plain text, in whatever encoding it came."""
    text = normalize_text(decode_text(data))
    return ParsedDocument(text, first_line(text), MIME_TEXT, "charset-normalizer", [0], [])


def parse_docx(data: bytes) -> ParsedDocument:
    """DOCX through python-docx: paragraphs and table rows in order, headings from paragraph styles."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise _office_open_error("DOCX", data, error) from error
    builder = _TextBuilder()
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                builder.add_paragraph(" | ".join(cell.text.strip() for cell in row.cells))
            continue
        level = _docx_heading_level(block.style.name if block.style is not None else "")
        if level:
            builder.add_heading(level, " ".join(block.text.split()))
        else:
            builder.add_paragraph(block.text.strip())
    text = builder.text()
    title = (document.core_properties.title or "").strip()
    title = title or (builder.headings[0].title if builder.headings else first_line(text))
    return ParsedDocument(text, title, MIME_DOCX, "python-docx", [0], builder.headings)


def _docx_heading_level(style_name: str) -> int:
    """1 for 'Title' and 'Heading 1', n for 'Heading n', 0 for body styles."""
    if style_name == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style_name)
    return int(match.group(1)) if match else 0


def parse_pptx(data: bytes) -> ParsedDocument:
    """PPTX through python-pptx: one page per slide, its title a heading, then its shapes top to bottom
    (text frames, table rows, grouped shapes), then its speaker notes."""
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        presentation = Presentation(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise _office_open_error("PPTX", data, error) from error
    builder, page_offsets = _TextBuilder(), []
    for slide in presentation.slides:
        page_offsets.append(builder.next_offset())
        title = slide.shapes.title
        if title is not None and title.has_text_frame:
            builder.add_heading(1, " ".join(title.text_frame.text.split()))
        for shape in _reading_order(shape for shape in slide.shapes if shape != title):
            _add_pptx_shape(shape, builder)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            builder.add_paragraph(slide.notes_slide.notes_text_frame.text.strip())
    text = builder.text()
    title = (presentation.core_properties.title or "").strip()
    title = title or (builder.headings[0].title if builder.headings else first_line(text))
    return ParsedDocument(text, title, MIME_PPTX, "python-pptx", page_offsets or [0], builder.headings)


def _reading_order(shapes) -> list:
    """Top to bottom, then left to right (placeholders without a position of their own first)."""
    return sorted(shapes, key=lambda shape: (shape.top or 0, shape.left or 0))


def _add_pptx_shape(shape, builder: _TextBuilder) -> None:
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):
        for member in _reading_order(shape.shapes):
            _add_pptx_shape(member, builder)
    elif shape.has_text_frame:
        for paragraph in shape.text_frame.paragraphs:
            builder.add_paragraph(" ".join(paragraph.text.split()))
    elif getattr(shape, "has_table", False):
        for row in shape.table.rows:
            builder.add_paragraph(" | ".join(" ".join(cell.text.split()) for cell in row.cells))


PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    MIME_PDF: parse_pdf,
    MIME_HTML: parse_html,
    MIME_MARKDOWN: parse_markdown,
    MIME_TEXT: parse_text,
    MIME_DOCX: parse_docx,
    MIME_PPTX: parse_pptx,
}
