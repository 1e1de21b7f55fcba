"""What every file parser returns and shares: the parsed document, its headings, the parse error,
the MIME types, and the helpers that build text from paragraphs, headings and table rows.

Parsers (:mod:`rayfleet.text.formats`) collect blocks with :class:`TextBuilder`, which joins
them with blank lines and records where each heading starts::

    builder = TextBuilder()
    builder.add_heading(1, "Parts")
    builder.add_paragraph(table_row(["impeller", "yearly"]))
    ParsedDocument(builder.text(), "Parts", MIME_TEXT, "example", [0], builder.headings)
"""

from __future__ import annotations

import codecs
import datetime
import io
import re
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field

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
MIME_PNG = "image/png"
MIME_JPEG = "image/jpeg"
MIME_TIFF = "image/tiff"
MIME_BMP = "image/bmp"
MIME_WEBP = "image/webp"
MIME_GIF = "image/gif"
MIME_VTT = "text/vtt"
MIME_SRT = "application/x-subrip"
# What reading a damaged Office zip raises, from zipfile, zlib, the XML parser or the package readers.
CORRUPT_PACKAGE_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, SyntaxError, KeyError, ValueError, TypeError,
)  # fmt: skip
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc/.xls/.ppt/.msg, and password-protected Office files
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


class TextBuilder:
    """Collects paragraphs and headings while walking a tree; joins them with blank lines."""

    def __init__(self):
        self.paragraphs: list[str] = []
        self.headings: list[Heading] = []
        self.page_offsets: list[int] = []  # where each page (slide, sheet, chapter) starts, if any
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

    def start_page(self) -> None:
        """Mark that a page (a slide, a sheet, a chapter) starts with the next paragraph."""
        self.page_offsets.append(self.next_offset())

    def add_sheet(self, name: str, rows) -> None:
        """A spreadsheet's sheet as one page, its name a heading, then its rows of cell values (empty rows
        left out); nothing at all for an empty sheet."""
        lines = [line for line in map(table_row, rows) if line]
        if lines:
            self.start_page()
            self.add_heading(1, " ".join(name.split()))
            for line in lines:
                self.add_paragraph(line)

    def next_offset(self) -> int:
        """Where the next paragraph will start."""
        self.end_block()
        return self.length + (len(PAGE_SEPARATOR) if self.paragraphs else 0)

    def text(self) -> str:
        self.end_block()
        return PAGE_SEPARATOR.join(self.paragraphs)


def normalize_text(text: str) -> str:
    """Unix newlines, no NULs or PDFium's soft-hyphen markers, no trailing spaces on lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").replace("\ufffe", "").replace("\x02", "")
    return re.sub(r"[ \t]+\n", "\n", text)


def joined_pages(pages: list[str]) -> tuple[str, list[int]]:
    """Pages' texts joined by :data:`PAGE_SEPARATOR`, and where each page starts in the result."""
    offsets, position = [], 0
    for page in pages:
        offsets.append(position)
        position += len(page) + len(PAGE_SEPARATOR)
    return PAGE_SEPARATOR.join(pages), offsets


def first_line(text: str) -> str | None:
    """The first non-blank line, as a fallback title."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:TITLE_MAX_CHARS]
    return None


# Byte order marks and their codecs (UTF-32's before UTF-16's: FF FE 00 00 begins with FF FE).
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip
# Unlabeled 8-bit text that reads as well in Windows-1252 as in the detector's first pick is read as
# Windows-1252, the default browsers use (WHATWG): French or German text read as Central European
# (cp1250) comes out garbled without any sign of it ("élčves" for "élèves").
WESTERN_ENCODING, CLOSE_CHAOS = "cp1252", 0.1


def decode_text(data: bytes) -> str:
    """Bytes to text (see :func:`decode_text_and_encoding`)."""
    return decode_text_and_encoding(data)[0]


def decode_text_and_encoding(data: bytes) -> tuple[str, str]:
    """Bytes to text, and the encoding it was read in: by its byte order mark (UTF-8, UTF-16, UTF-32),
    else UTF-8, else UTF-16 without a mark (every other byte zero), else the encoding charset-normalizer
    detects (Windows-1252 when it fits as well as the detector's pick).

    Raises:
        ParseError: binary content, or no encoding fits.
    """
    for mark, codec in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                return data.decode(codec), codec
            except UnicodeDecodeError as error:
                raise ParseError(f"text marked as {codec.upper()} that does not decode as such: {error}") from error
    if b"\x00" in data[:8192]:
        decoded = utf16_without_mark(data)
        if decoded is None:
            raise ParseError("binary content in a text file")
        return decoded
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise ParseError("text in an undetectable encoding")
    western = next(
        (match for match in matches if match.encoding == WESTERN_ENCODING and match.chaos <= best.chaos + CLOSE_CHAOS),
        None,
    )
    chosen = western or best
    return str(chosen), chosen.encoding


def utf16_without_mark(data: bytes) -> tuple[str, str] | None:
    """UTF-16 text without a byte order mark and its byte order, or None: Latin text (the high byte of every
    character zero), else text of any script that decodes strictly as one byte order and reads as text (no
    control characters, unassigned code points or private-use ones, which binary data decoded as UTF-16 is
    full of)."""
    head = data[:8192]
    for codec, zeros, others in (("utf-16-le", head[1::2], head[0::2]), ("utf-16-be", head[0::2], head[1::2])):
        if zeros.count(0) >= 0.3 * len(zeros) and others.count(0) <= 0.02 * len(others):
            try:
                return data.decode(codec), codec
            except UnicodeDecodeError:
                return None
    for codec in ("utf-16-le", "utf-16-be"):
        try:
            text = data.decode(codec) if len(data) % 2 == 0 else None
        except UnicodeDecodeError:
            continue
        if text and reads_as_text(text[:4096]):
            return text, codec
    return None


def reads_as_text(text: str) -> bool:
    """Whether ``text`` holds no control character but tabs and line breaks, and no unassigned,
    private-use or surrogate code point."""
    return not any(
        unicodedata.category(character) in ("Cc", "Cn", "Co", "Cs") and character not in "\t\n\r\f"
        for character in text
    )


def table_row(values) -> str:
    """One table row as text: cells joined by `` | ``, empty cells at its end dropped ('' for an empty row)."""
    cells = [cell_text(value) for value in values]
    while cells and not cells[-1]:
        cells.pop()
    return " | ".join(cells)


def cell_text(value) -> str:
    """A cell value as a reader writes it: whole numbers without '.0', dates without a midnight time."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time():
        return value.date().isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def zip_member(data: bytes, name: str) -> bytes:
    """One member of a zip, b'' when the zip or the member is missing or damaged."""
    try:
        return zipfile.ZipFile(io.BytesIO(data)).read(name)
    except CORRUPT_PACKAGE_ERRORS:  # KeyError (no such member) among them
        return b""


def office_open_error(kind: str, data: bytes, error: Exception) -> ParseError:
    """Why an Office zip (DOCX, PPTX, XLSX) did not open: a password or a legacy binary file, else damage."""
    if data.startswith(OLE_MAGIC):
        return ParseError(
            f"not a {kind} zip package: a password-protected file or a legacy binary Office file; "
            f"remove the password or save it as {kind}"
        )
    return corrupt_error(kind, error)


def corrupt_error(kind: str, error: Exception) -> ParseError:
    """A file of ``kind`` its reader could not get through, with the reader's error."""
    return ParseError(f"corrupt {kind}: {type(error).__name__}: {error}")
