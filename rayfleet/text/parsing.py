"""Turning files (PDF, HTML, Markdown, plain text, DOCX, PPTX, XLSX, OpenDocument, EPUB, CSV,
e-mail, RTF) into text with pages and headings.

Each format goes through a well-kept parser: PDFium (``pypdfium2``) for PDF, lxml via
Beautiful Soup for HTML, ``markdown-it-py`` for Markdown structure, ``python-docx`` for
DOCX, ``python-pptx`` for PPTX, ``openpyxl`` for XLSX, ``odfpy`` for ODT/ODS/ODP,
``ebooklib`` for EPUB, the standard library's ``csv`` and ``email`` for CSV/TSV and ``.eml``
messages, ``striprtf`` for RTF and ``charset-normalizer`` for text in an unknown encoding.
Every parser returns a :class:`ParsedDocument`: the text, where each page starts in it (PDF
pages, slides, sheets, EPUB chapters; one page for the rest), and the headings found, with
their offsets, for chunking.

A file that cannot give usable text raises :class:`ParseError` with a reason a person
can act on (corrupt, encrypted, no extractable text, legacy or unknown type)::

    document = parse_file("manual.pdf", data)
    document.page_count, document.text[document.page_offsets[3]:]
"""

from __future__ import annotations

import csv
import datetime
import io
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable

MIME_PDF = "application/pdf"
MIME_HTML = "text/html"
MIME_MARKDOWN = "text/markdown"
MIME_TEXT = "text/plain"
MIME_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MIME_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
MIME_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MIME_CSV = "text/csv"
MIME_TSV = "text/tab-separated-values"
MIME_EMAIL = "message/rfc822"
MIME_RTF = "application/rtf"
MIME_ODT = "application/vnd.oasis.opendocument.text"
MIME_ODS = "application/vnd.oasis.opendocument.spreadsheet"
MIME_ODP = "application/vnd.oasis.opendocument.presentation"
MIME_EPUB = "application/epub+zip"
ZIP_MIMETYPE_MEMBER = {MIME_ODT, MIME_ODS, MIME_ODP, MIME_EPUB}  # zips that name their type in a `mimetype` member
OOXML_MAIN_PARTS = {"word/document.xml": MIME_DOCX, "ppt/presentation.xml": MIME_PPTX, "xl/workbook.xml": MIME_XLSX}
# What reading a damaged Office zip raises, from zipfile, zlib, the XML parser or the package readers.
CORRUPT_PACKAGE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, SyntaxError, KeyError, ValueError,
                          TypeError)  # fmt: skip
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc/.xls/.ppt/.msg, and password-protected Office files

EXTENSIONS = {
    ".pdf": MIME_PDF,
    ".html": MIME_HTML,
    ".htm": MIME_HTML,
    ".xhtml": MIME_HTML,
    ".md": MIME_MARKDOWN,
    ".markdown": MIME_MARKDOWN,
    ".txt": MIME_TEXT,
    ".text": MIME_TEXT,
    ".rst": MIME_TEXT,
    ".adoc": MIME_TEXT,
    ".asciidoc": MIME_TEXT,
    ".org": MIME_TEXT,
    ".tex": MIME_TEXT,
    ".log": MIME_TEXT,
    ".json": MIME_TEXT,
    ".jsonl": MIME_TEXT,
    ".yaml": MIME_TEXT,
    ".yml": MIME_TEXT,
    ".docx": MIME_DOCX,
    ".pptx": MIME_PPTX,
    ".xlsx": MIME_XLSX,
    ".xlsm": MIME_XLSX,
    ".csv": MIME_CSV,
    ".tsv": MIME_TSV,
    ".tab": MIME_TSV,
    ".eml": MIME_EMAIL,
    ".rtf": MIME_RTF,
    ".odt": MIME_ODT,
    ".ods": MIME_ODS,
    ".odp": MIME_ODP,
    ".epub": MIME_EPUB,
}
# Binary formats no parser here reads, with what to save them as instead.
LEGACY_FORMATS = {".doc": "DOCX", ".xls": "XLSX", ".ppt": "PPTX", ".msg": "an .eml file"}
EMAIL_HEADER = re.compile(
    rb"^(return-path|received|delivered-to|message-id|mime-version|from|to|date|subject|x-[\w-]+):", re.IGNORECASE
)
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
    """The MIME type of a file, by extension, else by its first bytes; None when unknown.

    A file with no extension whose bytes are UTF-8 text (``README``, ``NOTES``) is plain text.
    """
    extension = posixpath.splitext(name.lower())[1]
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    head = data[:4096]
    if head.startswith(b"%PDF-"):
        return MIME_PDF
    if re.match(rb"^(\xef\xbb\xbf)?\s*<(!doctype html|html)", head, re.IGNORECASE):
        return MIME_HTML
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(data)
    if head.startswith(b"{\\rtf"):
        return MIME_RTF
    if EMAIL_HEADER.match(head) and re.search(rb"^(from|subject):", head, re.IGNORECASE | re.MULTILINE):
        return MIME_EMAIL
    if not extension and _looks_like_utf8_text(head):
        return MIME_TEXT
    return None


def _looks_like_utf8_text(head: bytes) -> bool:
    """UTF-8 (a character cut at the end allowed) with almost no control characters."""
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:
            return False
        text = head[: error.start].decode("utf-8-sig")
    controls = sum(1 for char in text if ord(char) < 32 and char not in "\t\n\r\f")
    return bool(text.strip()) and controls <= len(text) // 100


def _zip_type(data: bytes) -> str | None:
    """An Office Open XML file by the main part the zip holds, an OpenDocument or EPUB by its `mimetype`
    member; None for other zips."""
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
        names = set(package.namelist())
        if "mimetype" in names:
            declared = package.read("mimetype").decode("ascii", errors="replace").strip()
            return declared if declared in ZIP_MIMETYPE_MEMBER else None
    except (zipfile.BadZipFile, *CORRUPT_PACKAGE_ERRORS):
        return None
    return next((mime for part, mime in OOXML_MAIN_PARTS.items() if part in names), None)


def _office_open_error(kind: str, data: bytes, error: Exception) -> ParseError:
    if data.startswith(OLE_MAGIC):
        return ParseError(
            f"not a {kind} zip package: a password-protected file or a legacy binary Office file; "
            f"remove the password or save it as {kind}"
        )
    return ParseError(f"corrupt {kind}: {type(error).__name__}: {error}")


def _unknown_type_error(name: str, data: bytes) -> ParseError:
    extension = posixpath.splitext(name.lower())[1]
    if extension in LEGACY_FORMATS or data.startswith(OLE_MAGIC):
        return ParseError(
            f"legacy binary Office file {extension or '(no extension)'!r} (or a password-protected one): "
            f"not readable here; save it as {LEGACY_FORMATS.get(extension, 'DOCX, XLSX or PPTX')}"
        )
    supported = ", ".join(sorted(EXTENSIONS))
    return ParseError(f"unknown file type {posixpath.splitext(name)[1] or '(no extension)'!r}; supported: {supported}")


def parse_file(name: str, data: bytes) -> ParsedDocument:
    """Parse one file's bytes by its type.

    Raises:
        ParseError: unknown type, corrupt or encrypted file, or no extractable text.
    """
    mime_type = detect_mime_type(name, data)
    if mime_type is None:
        raise _unknown_type_error(name, data)
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

    def add_document(self, document: "ParsedDocument", deeper: int = 0) -> None:
        """Append another document's paragraphs, its headings kept (``deeper`` levels down)."""
        headings = {heading.offset: heading for heading in document.headings}
        offset = 0
        for paragraph in document.text.split(PAGE_SEPARATOR):
            heading = headings.get(offset)
            if heading is not None and paragraph == heading.title:
                self.add_heading(heading.level + deeper, heading.title)
            else:
                self.add_paragraph(paragraph)
            offset += len(paragraph) + len(PAGE_SEPARATOR)

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


def parse_html(data: bytes | str) -> ParsedDocument:
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
            elif child.name == "table" and _is_data_table(child):
                builder.end_block()
                for row in _html_table_rows(child):
                    builder.add_paragraph(_table_row(cell.get_text(" ") for cell in row))
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


HTML_LAYOUT_INSIDE_CELLS = ["table", "p", "div", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote"]


def _is_data_table(table) -> bool:
    """A table of values (read as rows) rather than a layout table that holds the page's blocks."""
    return table.find(HTML_LAYOUT_INSIDE_CELLS) is None


def _html_table_rows(table) -> list[list]:
    """The caption (as a one-cell row) and each row's cells, in order."""
    caption = table.find("caption")
    rows = [[caption]] if caption is not None else []
    for row in table.find_all("tr"):
        rows.append(row.find_all(["th", "td"], recursive=False))
    return rows


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
    except (PackageNotFoundError, *CORRUPT_PACKAGE_ERRORS) as error:
        raise _office_open_error("DOCX", data, error) from error
    builder = _TextBuilder()
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                builder.add_paragraph(_table_row(cell.text for cell in row.cells))
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
    except (PackageNotFoundError, *CORRUPT_PACKAGE_ERRORS) as error:
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
            builder.add_paragraph(_table_row(cell.text for cell in row.cells))


def parse_xlsx(data: bytes) -> ParsedDocument:
    """XLSX through openpyxl: one page per sheet that holds anything, its name a heading, then its rows
    (cells joined by `` | ``, values as Excel last computed them)."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    builder, page_offsets = _TextBuilder(), []
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            for sheet in workbook.worksheets:  # read-only sheets stream their rows from the zip
                rows = [row for row in map(_table_row, sheet.iter_rows(values_only=True)) if row]
                if rows:
                    page_offsets.append(builder.next_offset())
                    builder.add_heading(1, " ".join(sheet.title.split()))
                    for row in rows:
                        builder.add_paragraph(row)
            title = (workbook.properties.title or "").strip()
        finally:
            workbook.close()
    except (InvalidFileException, *CORRUPT_PACKAGE_ERRORS) as error:
        raise _office_open_error("XLSX", data, error) from error
    text = builder.text()
    return ParsedDocument(text, title or first_line(text), MIME_XLSX, "openpyxl", page_offsets or [0], builder.headings)


def _table_row(values) -> str:
    """One table row as text: cells joined by `` | ``, empty cells at its end dropped ('' for an empty row)."""
    cells = [_cell_text(value) for value in values]
    while cells and not cells[-1]:
        cells.pop()
    return " | ".join(cells)


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time():
        return value.date().isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def parse_delimited(data: bytes, delimiter: str, mime_type: str) -> ParsedDocument:
    """CSV or TSV through the standard library: one paragraph per row, cells joined by `` | ``.

    The delimiter is sniffed from the first lines among ``, ; \\t |`` (European CSV uses ``;``),
    else the one the extension names.
    """
    text = normalize_text(decode_text(data))
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # a cell may hold a whole document
    try:
        delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        pass
    builder = _TextBuilder()
    try:
        for row in csv.reader(io.StringIO(text), delimiter=delimiter):
            builder.add_paragraph(_table_row(row))
    except csv.Error as error:
        raise ParseError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {error}") from error
    text = builder.text()
    return ParsedDocument(text, first_line(text), mime_type, "csv", [0], [])


def parse_csv(data: bytes) -> ParsedDocument:
    return parse_delimited(data, ",", MIME_CSV)


def parse_tsv(data: bytes) -> ParsedDocument:
    return parse_delimited(data, "\t", MIME_TSV)


EMAIL_SHOWN_HEADERS = ("From", "To", "Cc", "Date")


def parse_email(data: bytes) -> ParsedDocument:
    """An e-mail (``.eml``) through the standard library: its subject as a heading, sender, recipients
    and date, the body (plain text, else its HTML as text), then each attachment in a format read here
    (forwarded messages too) under a heading of its file name."""
    from email import policy
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(data)
    if not message.keys():
        raise ParseError("not an e-mail message: no headers")
    builder = _TextBuilder()
    subject = " ".join(_header(message, "Subject").split())
    if subject:
        builder.add_heading(1, subject)
    attachments = list(message.iter_attachments())
    names = [_attachment_name(part, index) for index, part in enumerate(attachments, 1)]
    fields = [(name, value) for name in EMAIL_SHOWN_HEADERS if (value := _header(message, name))]
    fields += [("Attachments", ", ".join(names))] if names else []
    builder.add_paragraph("\n".join(f"{name}: {' '.join(value.split())}" for name, value in fields))
    builder.add_paragraph(_email_body_text(message))
    for name, part in zip(names, attachments):
        attached = _parse_attachment(name, part)
        if attached is not None:
            builder.add_heading(2, name)
            builder.add_document(attached, deeper=2)
    text = builder.text()
    return ParsedDocument(text, subject or first_line(text), MIME_EMAIL, "email", [0], builder.headings)


def _header(message, name: str) -> str:
    """A header decoded (RFC 2047), '' when absent or too malformed to parse."""
    from email.errors import HeaderParseError

    try:
        return str(message.get(name, ""))
    except (HeaderParseError, ValueError, IndexError):
        return ""


def _email_body_text(message) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    try:
        content = body.get_content()
    except (LookupError, UnicodeError):  # an unknown or wrong charset
        content = (body.get_payload(decode=True) or b"").decode("utf-8", errors="replace")
    if body.get_content_subtype() == "html":
        return parse_html(content).text
    return normalize_text(content).strip()


def _attachment_name(part, index: int) -> str:
    if part.get_content_type() == "message/rfc822":
        subject = " ".join(_header(part.get_content(), "Subject").split())
        return f"{subject or f'message {index}'}.eml"
    return " ".join((part.get_filename() or f"attachment {index}").split())


def _parse_attachment(name: str, part) -> ParsedDocument | None:
    """The attachment's text, or None when it is not in a format read here (images, archives...)."""
    if part.get_content_type() == "message/rfc822":
        data = part.get_content().as_bytes()
    else:
        data = part.get_payload(decode=True) or b""
    try:
        return parse_file(name, data)
    except Exception:  # unreadable or a parser bug: the message and its other attachments still count
        return None


def parse_rtf(data: bytes) -> ParsedDocument:
    """RTF through striprtf, in the code page the file declares (``\\ansicpgNNNN``, else cp1252)."""
    from striprtf.striprtf import rtf_to_text

    if not data.lstrip().startswith(b"{\\rtf"):
        raise ParseError("corrupt RTF: it does not start with {\\rtf")
    code_page = re.search(rb"\\ansicpg(\d+)", data[:4096])
    encoding = f"cp{int(code_page.group(1))}" if code_page else "cp1252"
    try:
        "".encode(encoding)
    except LookupError:
        encoding = "cp1252"
    try:
        text = rtf_to_text(data.decode(encoding, errors="replace"), encoding=encoding, errors="replace")
    except (ValueError, IndexError) as error:
        raise ParseError(f"corrupt RTF: {type(error).__name__}: {error}") from error
    text = normalize_text(text).strip()
    info_title = re.search(rb"\{\\title\s+([^{}\\]*)\}", data[:65536])
    title = info_title.group(1).decode(encoding, errors="replace").strip() if info_title else ""
    return ParsedDocument(text, title or first_line(text), MIME_RTF, "striprtf", [0], [])


ODF_SKIPPED = {"tracked-changes", "sequence-decls", "variable-decls", "user-field-decls", "table-of-content",
               "alphabetical-index", "forms", "annotation", "note-citation"}  # fmt: skip


def parse_opendocument(data: bytes) -> ParsedDocument:
    """ODT, ODS or ODP through odfpy. Text: headings (outline levels), paragraphs, lists and table rows
    in order. Spreadsheet: one page per sheet with content, its name a heading, then its rows.
    Presentation: one page per slide, its title a heading, then its text boxes and speaker notes."""
    from odf.opendocument import load

    if b"encryption-data" in _zip_member(data, "META-INF/manifest.xml"):
        raise ParseError("encrypted OpenDocument file: it needs a password")
    try:
        document = load(io.BytesIO(data))
    except (*CORRUPT_PACKAGE_ERRORS, AttributeError, IndexError) as error:
        raise ParseError(f"corrupt OpenDocument file: {type(error).__name__}: {error}") from error
    builder, page_offsets = _TextBuilder(), []
    mime_type = document.mimetype
    if mime_type == MIME_ODS:
        for sheet in _odf_children(document.spreadsheet, "table"):
            rows = [row for row in map(_table_row, _odf_table_rows(sheet)) if row]
            if rows:
                page_offsets.append(builder.next_offset())
                builder.add_heading(1, " ".join(_odf_attribute(sheet, "name").split()))
                for row in rows:
                    builder.add_paragraph(row)
    elif mime_type == MIME_ODP:
        for slide in _odf_children(document.presentation, "page"):
            page_offsets.append(builder.next_offset())
            _walk_odf(slide, builder)
    elif mime_type == MIME_ODT:
        _walk_odf(document.text, builder)
    else:
        raise ParseError(f"unsupported OpenDocument type {mime_type!r}: text, spreadsheet and presentation are read")
    text = builder.text()
    title = _odf_title(document)
    return ParsedDocument(text, title or first_line(text), mime_type, "odfpy", page_offsets or [0], builder.headings)


def _zip_member(data: bytes, name: str) -> bytes:
    """One member of a zip, b'' when the zip or the member is missing or damaged."""
    try:
        return zipfile.ZipFile(io.BytesIO(data)).read(name)
    except (KeyError, *CORRUPT_PACKAGE_ERRORS):
        return b""


def _odf_children(node, name: str) -> list:
    return [child for child in node.childNodes if child.nodeType == child.ELEMENT_NODE and child.qname[1] == name]


def _odf_attribute(node, name: str) -> str:
    return next((str(value) for (_, key), value in node.attributes.items() if key == name), "")


def _odf_text(node) -> str:
    from odf import teletype

    return " ".join(teletype.extractText(node).split())


def _odf_table_rows(table) -> list[list[str]]:
    """Each row's cell texts; a repeated cell (``number-columns-repeated``) counts once when empty."""
    rows = []
    for row in table.getElementsByType(_odf_type("table", "TableRow")):
        cells = []
        for cell in _odf_children(row, "table-cell") + _odf_children(row, "covered-table-cell"):
            value = _odf_text(cell)
            repeat = int(_odf_attribute(cell, "number-columns-repeated") or 1) if value else 1
            cells += [value] * min(repeat, 100)
        rows.append(cells)
    return rows


def _odf_type(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(f"odf.{module}"), name)


def _walk_odf(node, builder: _TextBuilder) -> None:
    for child in node.childNodes:
        if child.nodeType != child.ELEMENT_NODE or child.qname[1] in ODF_SKIPPED:
            continue
        name = child.qname[1]
        if name == "h":
            builder.add_heading(int(_odf_attribute(child, "outline-level") or 1), _odf_text(child))
        elif name == "p":
            builder.add_paragraph(_odf_text(child))
        elif name == "table":
            for row in _odf_table_rows(child):
                builder.add_paragraph(_table_row(row))
        elif name == "frame" and _odf_attribute(child, "class") == "title":
            builder.add_heading(1, _odf_text(child))
        else:  # sections, lists, frames, text boxes, groups, notes: their content in order
            _walk_odf(child, builder)


def _odf_title(document) -> str:
    titles = [_odf_text(node) for node in document.meta.childNodes if node.qname[1] == "title"]
    return next((title for title in titles if title), "")


def parse_epub(data: bytes) -> ParsedDocument:
    """EPUB through ebooklib: one page per chapter in reading (spine) order, each read as HTML with its
    headings."""
    from ebooklib import epub

    if _zip_member(data, "META-INF/encryption.xml"):
        raise ParseError("DRM-protected EPUB: its chapters are encrypted")
    try:
        book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
    except (epub.EpubException, *CORRUPT_PACKAGE_ERRORS, AttributeError, IndexError) as error:
        raise ParseError(f"corrupt EPUB: {type(error).__name__}: {error}") from error
    builder, page_offsets = _TextBuilder(), []
    for item_id, _ in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or not item.get_name().lower().endswith((".xhtml", ".html", ".htm", ".xml")):
            continue
        chapter = parse_html(item.get_content())
        if chapter.text.strip():
            page_offsets.append(builder.next_offset())
            builder.add_document(chapter)
    titles = book.get_metadata("DC", "title")
    title = " ".join(str(titles[0][0]).split()) if titles else ""
    text = builder.text()
    return ParsedDocument(text, title or first_line(text), MIME_EPUB, "ebooklib", page_offsets or [0], builder.headings)


PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    MIME_PDF: parse_pdf,
    MIME_HTML: parse_html,
    MIME_MARKDOWN: parse_markdown,
    MIME_TEXT: parse_text,
    MIME_DOCX: parse_docx,
    MIME_PPTX: parse_pptx,
    MIME_XLSX: parse_xlsx,
    MIME_CSV: parse_csv,
    MIME_TSV: parse_tsv,
    MIME_EMAIL: parse_email,
    MIME_RTF: parse_rtf,
    MIME_ODT: parse_opendocument,
    MIME_ODS: parse_opendocument,
    MIME_ODP: parse_opendocument,
    MIME_EPUB: parse_epub,
}
