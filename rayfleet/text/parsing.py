"""Turning files into text with pages and headings: the type of a file, and the parser that reads it.

Formats (one module each family, :mod:`rayfleet.text.formats`): PDF (scanned pages by OCR),
HTML, Markdown, EPUB, plain text, CSV/TSV, RTF, DOCX, PPTX, XLSX, OpenDocument (ODT, ODS, ODP),
e-mail (``.eml``, attachments included), subtitles and meeting transcripts (WebVTT, SubRip)
and pictures of text (PNG, JPEG, TIFF, BMP, WebP, GIF: OCR). Every parser returns a
:class:`ParsedDocument`: the text, where each page starts in it (PDF pages, slides, sheets, EPUB
chapters; one page for the rest), and the headings found, with their offsets, for chunking.

A file that cannot give usable text raises :class:`ParseError` with a reason a person
can act on (corrupt, encrypted, no extractable text, legacy or unknown type)::

    document = parse_file("manual.pdf", data)
    document.page_count, document.text[document.page_offsets[3]:]
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from typing import Callable, Collection

from rayfleet.text.document import (
    CORRUPT_PACKAGE_ERRORS,
    MIME_CSV,
    MIME_DOCX,
    MIME_EMAIL,
    MIME_BMP,
    MIME_EPUB,
    MIME_GIF,
    MIME_HTML,
    MIME_JPEG,
    MIME_MARKDOWN,
    MIME_ODP,
    MIME_ODS,
    MIME_ODT,
    MIME_PDF,
    MIME_PNG,
    MIME_PPTX,
    MIME_RTF,
    MIME_SRT,
    MIME_TEXT,
    MIME_TIFF,
    MIME_TSV,
    MIME_VTT,
    MIME_WEBP,
    MIME_XLSX,
    OLE_MAGIC,
    Heading,
    ParsedDocument,
    ParseError,
)
from rayfleet.text.formats.image import parse_image
from rayfleet.text.formats.mail import parse_email
from rayfleet.text.formats.markup import parse_epub, parse_html, parse_markdown
from rayfleet.text.formats.office import parse_docx, parse_pptx, parse_xlsx
from rayfleet.text.formats.opendocument import parse_opendocument
from rayfleet.text.formats.pdf import parse_pdf
from rayfleet.text.formats.plain import parse_csv, parse_rtf, parse_text, parse_tsv
from rayfleet.text.formats.subtitles import parse_srt, parse_vtt
from rayfleet.text.ocr import OcrConfig

__all__ = [
    "EXTENSIONS", "Heading", "OLE_MAGIC", "ParseError", "ParsedDocument", "detect_mime_type", "parse_file",
    *(name for name in dir() if name.startswith("MIME_")),
]  # fmt: skip

ZIP_MIMETYPE_MEMBER = {MIME_ODT, MIME_ODS, MIME_ODP, MIME_EPUB}  # zips that name their type in a `mimetype` member
OOXML_MAIN_PARTS = {"word/document.xml": MIME_DOCX, "ppt/presentation.xml": MIME_PPTX, "xl/workbook.xml": MIME_XLSX}
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
    ".xml": MIME_TEXT,  # as written, like JSON: element names label the values (data exports, configs)
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
    ".png": MIME_PNG,
    ".jpg": MIME_JPEG,
    ".jpeg": MIME_JPEG,
    ".tif": MIME_TIFF,
    ".tiff": MIME_TIFF,
    ".bmp": MIME_BMP,
    ".webp": MIME_WEBP,
    ".gif": MIME_GIF,
    ".vtt": MIME_VTT,
    ".srt": MIME_SRT,
}
IMAGE_TYPES = {MIME_PNG, MIME_JPEG, MIME_TIFF, MIME_BMP, MIME_WEBP, MIME_GIF}
IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", MIME_PNG), (b"\xff\xd8\xff", MIME_JPEG), (b"II*\x00", MIME_TIFF), (b"MM\x00*", MIME_TIFF),
    (b"GIF87a", MIME_GIF), (b"GIF89a", MIME_GIF),
)  # fmt: skip
# Binary formats no parser here reads, with what to save them as instead.
LEGACY_FORMATS = {".doc": "DOCX", ".xls": "XLSX", ".ppt": "PPTX", ".msg": "an .eml file"}
# Tar archives' own extensions (``.tar.gz`` is a ``.tar`` once inflated); one that opens is unpacked
# before parsing (rayfleet.archives).
TAR_EXTENSIONS = (".tar", ".tgz", ".tbz", ".tbz2", ".txz")
EMAIL_HEADER = re.compile(
    rb"^(return-path|received|delivered-to|message-id|mime-version|from|to|date|subject|x-[\w-]+):", re.IGNORECASE
)


def detect_mime_type(name: str, data: bytes, text_extensions: Collection[str] = ()) -> str | None:
    """The MIME type of a file, by extension, else by its first bytes; None when unknown.

    Bytes that are unmistakably a PDF, an Office/OpenDocument/EPUB package or RTF win over an
    extension that says otherwise (a PDF saved as ``.docx``). Pictures are recognised by their
    bytes only in files with no extension, as is a WebVTT transcript. A file with no extension
    whose bytes are UTF-8 text (``README``, ``NOTES``) is plain text, as is one whose extension
    the caller names in ``text_extensions`` (lower case, with the dot: ``.cfg``, ``.sql``). A
    ``.xls`` or ``.doc`` that is no binary Office file but markup or text is read as HTML, or as
    TSV (``.xls``) or text.
    """
    extension = posixpath.splitext(name.lower())[1]
    signed = _signature_type(data)
    if extension in EXTENSIONS:
        return signed or EXTENSIONS[extension]
    if extension and extension in text_extensions:
        return signed or MIME_TEXT
    head = data[:4096]
    if signed:
        return signed
    if re.match(rb"^(\xef\xbb\xbf)?\s*<(!doctype html|html)", head, re.IGNORECASE):
        return MIME_HTML
    if not extension and re.match(rb"^(\xef\xbb\xbf)?WEBVTT(\s|$)", head):
        return MIME_VTT
    if not extension and (picture := _picture_type(head)):
        return picture  # only without an extension: camera RAW files (.nef, .dng) open as TIFF too
    if EMAIL_HEADER.match(head) and re.search(rb"^(from|subject):", head, re.IGNORECASE | re.MULTILINE):
        return MIME_EMAIL
    if not extension and _looks_like_utf8_text(head):
        return MIME_TEXT
    if extension in LEGACY_FORMATS and not data.startswith(OLE_MAGIC):
        return _legacy_named_text_type(extension, head)
    return None


def _legacy_named_text_type(extension: str, head: bytes) -> str | None:
    """What a text file named as a legacy Office file is: web applications export tables as ``.xls``
    that are HTML or tab-separated text, and Word opens HTML or text saved as ``.doc``."""
    if re.match(rb"^(\xef\xbb\xbf)?\s*<", head):
        return MIME_HTML
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or _looks_like_utf8_text(head):  # Excel's "Unicode text": UTF-16
        return MIME_TSV if extension == ".xls" else MIME_TEXT
    return None


def _picture_type(head: bytes) -> str | None:
    """The picture format the first bytes announce (PNG, JPEG, TIFF, GIF, WebP, BMP), if any."""
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return MIME_WEBP
    if head.startswith(b"BM") and head[6:10] == bytes(4):  # a bitmap's reserved header bytes are zero
        return MIME_BMP
    return next((mime_type for magic, mime_type in IMAGE_MAGIC if head.startswith(magic)), None)


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
    except CORRUPT_PACKAGE_ERRORS:
        return None
    return next((mime for part, mime in OOXML_MAIN_PARTS.items() if part in names), None)


def _unknown_type_error(name: str, data: bytes) -> ParseError:
    extension = posixpath.splitext(name.lower())[1]
    if extension in LEGACY_FORMATS or (not extension and data.startswith(OLE_MAGIC)):
        return ParseError(
            f"legacy binary Office file {extension or '(no extension)'!r} (or a password-protected one): "
            f"not readable here; save it as {LEGACY_FORMATS.get(extension, 'DOCX, XLSX or PPTX')}"
        )
    if extension == ".zip":  # one that opens is unpacked before parsing (rayfleet.archives)
        return ParseError("zip archive that does not open (damaged, or not a zip file): its files cannot be listed")
    if extension in TAR_EXTENSIONS:
        return ParseError(
            "tar archive that does not open (damaged, cut short, or not a tar file): its files cannot be listed"
        )
    if data[257:262] == b"ustar":  # archives are known by name only (a compressed one: export.gz inflated)
        return ParseError(
            "tar archive under a name that is not a tar's: its files are listed only when it is named "
            ".tar, .tar.gz, .tgz, .tar.bz2 or .tar.xz"
        )
    supported = ", ".join(sorted(EXTENSIONS))
    hint = "; to read it as plain text, name its extension in text_extensions" if extension else ""
    return ParseError(
        f"unknown file type {posixpath.splitext(name)[1] or '(no extension)'!r}; supported: {supported}{hint}"
    )


def _signature_type(data: bytes) -> str | None:
    """The type that a file's first bytes leave no doubt about, if any."""
    if data.startswith(b"%PDF-"):
        return MIME_PDF
    if data.startswith(b"PK\x03\x04"):
        return _zip_type(data)
    if data.startswith(b"{\\rtf"):
        return MIME_RTF
    return None


def parse_file(
    name: str, data: bytes, ocr: OcrConfig | None = None, text_extensions: Collection[str] = ()
) -> ParsedDocument:
    """Parse one file's bytes by its type; scanned PDF pages and images through OCR as ``ocr`` says;
    files with an extension in ``text_extensions`` as plain text (:func:`detect_mime_type`).

    Raises:
        ParseError: an empty file, unknown type, corrupt or encrypted file, or no extractable text.
    """
    if not data:
        raise ParseError("empty file (0 bytes)")
    ocr = ocr or OcrConfig()
    mime_type = detect_mime_type(name, data, text_extensions)
    if mime_type is None:
        raise _unknown_type_error(name, data)
    if mime_type in IMAGE_TYPES:
        document = parse_image(data, mime_type, ocr)
    elif mime_type in OCR_PARSERS:
        document = OCR_PARSERS[mime_type](data, ocr)
    else:
        document = PARSERS[mime_type](data)
    if not document.text.strip():
        raise ParseError("no extractable text" + _no_text_hint(mime_type, ocr))
    return document


def _no_text_hint(mime_type: str, ocr: OcrConfig) -> str:
    if mime_type != MIME_PDF and mime_type not in IMAGE_TYPES:
        return ""
    if ocr.enabled:
        return " (no text layer, and no picture OCR could read)"
    return " (a scanned PDF needs OCR: ocr.enabled=true)"


# Formats that may hold scans or pictures (an e-mail through its attachments) take the OCR config.
OCR_PARSERS: dict[str, Callable[[bytes, OcrConfig], ParsedDocument]] = {MIME_PDF: parse_pdf, MIME_EMAIL: parse_email}
# Formats read from their bytes alone (images: parse_image).
PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    MIME_HTML: parse_html,
    MIME_MARKDOWN: parse_markdown,
    MIME_TEXT: parse_text,
    MIME_DOCX: parse_docx,
    MIME_PPTX: parse_pptx,
    MIME_XLSX: parse_xlsx,
    MIME_CSV: parse_csv,
    MIME_TSV: parse_tsv,
    MIME_RTF: parse_rtf,
    MIME_ODT: parse_opendocument,
    MIME_ODS: parse_opendocument,
    MIME_ODP: parse_opendocument,
    MIME_EPUB: parse_epub,
    MIME_VTT: parse_vtt,
    MIME_SRT: parse_srt,
}
