"""Plain formats: text in any encoding (the byte order mark, UTF-8 or ``charset-normalizer``), CSV and TSV
(the standard library's ``csv``) and RTF (``striprtf``)."""

from __future__ import annotations

import csv
import io
import re

from rayfleet.text.document import (
    MIME_CSV,
    MIME_RTF,
    MIME_TEXT,
    MIME_TSV,
    ParseError,
    ParsedDocument,
    TextBuilder,
    corrupt_error,
    decode_text,
    decode_text_and_encoding,
    first_line,
    normalize_text,
    table_row,
)


def parse_text(data: bytes) -> ParsedDocument:
    """Plain text, in whatever encoding it came; the parser named is the encoding it was read in
    (``text:utf-8``, ``text:cp1252``)."""
    text, encoding = decode_text_and_encoding(data)
    text = normalize_text(text)
    return ParsedDocument(text, first_line(text), MIME_TEXT, f"text:{encoding}", [0], [])


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
    builder = TextBuilder()
    try:
        for row in csv.reader(io.StringIO(text), delimiter=delimiter):
            builder.add_paragraph(table_row(row))
    except csv.Error as error:
        raise ParseError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {error}") from error
    text = builder.text()
    return ParsedDocument(text, None, mime_type, "csv", [0], [])  # a header row is no title: readers see the file name


def parse_csv(data: bytes) -> ParsedDocument:
    return parse_delimited(data, ",", MIME_CSV)


def parse_tsv(data: bytes) -> ParsedDocument:
    return parse_delimited(data, "\t", MIME_TSV)


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
        raise corrupt_error("RTF", error) from error
    text = normalize_text(text).strip()
    info_title = re.search(rb"\{\\title\s+([^{}\\]*)\}", data[:65536])
    title = info_title.group(1).decode(encoding, errors="replace").strip() if info_title else ""
    return ParsedDocument(text, title or first_line(text), MIME_RTF, "striprtf", [0], [])
