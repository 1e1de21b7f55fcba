"""OpenDocument (ODT, ODS, ODP) through ``odfpy``."""

from __future__ import annotations

import io

from rayfleet.text.document import (
    CORRUPT_PACKAGE_ERRORS,
    MIME_ODP,
    MIME_ODS,
    MIME_ODT,
    ParseError,
    ParsedDocument,
    TextBuilder,
    corrupt_error,
    first_line,
    table_row,
    zip_member,
)

ODF_SKIPPED = {"tracked-changes", "sequence-decls", "variable-decls", "user-field-decls", "table-of-content",
               "alphabetical-index", "forms", "annotation", "note-citation"}  # fmt: skip
ODF_SEPARATORS = {"p", "h", "s", "tab", "line-break", "list-item"}  # elements whose end separates words
ODF_ROW_GROUPS = ("table-header-rows", "table-rows", "table-row-group")


def parse_opendocument(data: bytes) -> ParsedDocument:
    """ODT, ODS or ODP through odfpy. Text: headings (outline levels), paragraphs, lists and table rows
    in order. Spreadsheet: one page per sheet with content, its name a heading, then its rows.
    Presentation: one page per slide, its title a heading, then its text boxes and speaker notes."""
    from odf.opendocument import load

    if b"encryption-data" in zip_member(data, "META-INF/manifest.xml"):
        raise ParseError("encrypted OpenDocument file: it needs a password")
    try:
        document = load(io.BytesIO(data))
    except (*CORRUPT_PACKAGE_ERRORS, AttributeError, IndexError) as error:
        raise corrupt_error("OpenDocument file", error) from error
    builder = TextBuilder()
    mime_type = document.mimetype
    if mime_type == MIME_ODS:
        for sheet in _odf_children(document.spreadsheet, "table"):
            builder.add_sheet(_odf_attribute(sheet, "name"), _odf_table_rows(sheet))
    elif mime_type == MIME_ODP:
        for slide in _odf_children(document.presentation, "page"):
            builder.start_page()
            _walk_odf(slide, builder)
    elif mime_type == MIME_ODT:
        _walk_odf(document.text, builder)
    else:
        raise ParseError(f"unsupported OpenDocument type {mime_type!r}: text, spreadsheet and presentation are read")
    text = builder.text()
    title = _odf_title(document)
    title = title or (None if mime_type == MIME_ODS else first_line(text))  # a sheet name is no title
    return ParsedDocument(text, title, mime_type, "odfpy", builder.page_offsets or [0], builder.headings)


def _odf_children(node, *names: str) -> list:
    """The element children of ``node`` with one of these local names, in document order."""
    return [child for child in node.childNodes if child.nodeType == child.ELEMENT_NODE and child.qname[1] in names]


def _odf_attribute(node, name: str) -> str:
    return next((str(value) for (_, key), value in node.attributes.items() if key == name), "")


def _odf_text(node) -> str:
    """The text of ``node`` on one line: its paragraphs, spaces, tabs and line breaks become single spaces."""
    parts: list[str] = []
    _collect_odf_text(node, parts)
    return " ".join("".join(parts).split())


def _collect_odf_text(node, parts: list[str]) -> None:
    for child in node.childNodes:
        if child.nodeType == child.TEXT_NODE:
            parts.append(child.data)
        elif child.nodeType == child.ELEMENT_NODE and child.qname[1] not in ODF_SKIPPED:
            _collect_odf_text(child, parts)
            parts.append(" " if child.qname[1] in ODF_SEPARATORS else "")


def _odf_table_rows(table) -> list[list[str]]:
    """Each row's cell texts in column order; a merged cell's covered cells are empty, and a
    repeated cell (``number-columns-repeated``) counts once when empty. Rows inside header and
    row groups are read; a table nested in a cell is read only as that cell's text."""
    rows = []
    for row in _odf_rows(table):
        cells = []
        for cell in _odf_children(row, "table-cell", "covered-table-cell"):
            value = _odf_text(cell)
            repeat = int(_odf_attribute(cell, "number-columns-repeated") or 1) if value else 1
            cells += [value] * min(repeat, 100)
        rows.append(cells)
    return rows


def _odf_rows(node) -> list:
    rows = []
    for child in _odf_children(node, "table-row", *ODF_ROW_GROUPS):
        rows += [child] if child.qname[1] == "table-row" else _odf_rows(child)
    return rows


def _walk_odf(node, builder: TextBuilder) -> None:
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
                builder.add_paragraph(table_row(row))
        elif name == "frame" and _odf_attribute(child, "class") == "title":
            builder.add_heading(1, _odf_text(child))
        else:  # sections, lists, frames, text boxes, groups, notes: their content in order
            _walk_odf(child, builder)


def _odf_title(document) -> str:
    titles = [_odf_text(node) for node in document.meta.childNodes if node.qname[1] == "title"]
    return next((title for title in titles if title), "")
