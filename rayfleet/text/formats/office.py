"""Office Open XML: DOCX (``python-docx``), PPTX (``python-pptx``) and XLSX (``openpyxl``)."""

from __future__ import annotations

import io
import re
from typing import Iterator

from lxml import etree

from rayfleet.text.document import (
    CORRUPT_PACKAGE_ERRORS,
    MIME_DOCX,
    MIME_PPTX,
    MIME_XLSX,
    ParsedDocument,
    TextBuilder,
    first_line,
    office_open_error,
    table_row,
)


def parse_docx(data: bytes) -> ParsedDocument:
    """DOCX through python-docx: paragraphs (each followed by its text boxes) and table rows in order,
    headings from paragraph styles, then the footnotes and endnotes, then the headers' and footers' text.
    A paragraph's text is as the document reads now: tracked insertions in, tracked deletions out, the
    text of content controls (form fields, template blocks) in."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, *CORRUPT_PACKAGE_ERRORS) as error:
        raise office_open_error("DOCX", data, error) from error
    builder = TextBuilder()
    for block in docx_blocks(document):
        if isinstance(block, Table):
            for row in docx_rows(block):
                builder.add_paragraph(docx_row(row))
            continue
        level = _docx_heading_level(block.style.name if block.style is not None else "")
        text = docx_paragraph_text(block._p)
        if level:
            builder.add_heading(level, " ".join(text.split()))
        else:
            builder.add_paragraph(text.strip())
        for line in docx_text_box_lines(block._p):
            builder.add_paragraph(line)
    for line in docx_note_lines(document) + docx_header_footer_lines(document):
        builder.add_paragraph(line)
    text = builder.text()
    title = (document.core_properties.title or "").strip()
    title = title or (builder.headings[0].title if builder.headings else first_line(text))
    return ParsedDocument(text, title, MIME_DOCX, "python-docx", [0], builder.headings)


DOCX_NAMESPACES = {
    "w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
}
# Paragraphs of the text boxes anchored in a paragraph (python-docx's text skips them): the innermost
# ones, and not the VML copy Word keeps of each box as a fallback for older readers.
TEXT_BOX_PARAGRAPHS = etree.XPath(".//w:txbxContent//w:p[not(.//w:txbxContent)][not(ancestor::mc:Fallback)]",
                                  namespaces=DOCX_NAMESPACES)  # fmt: skip
# Footnotes and endnotes with text (the separators Word keeps among them have a w:type).
NOTES = etree.XPath("/w:footnotes/w:footnote[not(@w:type)] | /w:endnotes/w:endnote[not(@w:type)]",
                    namespaces=DOCX_NAMESPACES)  # fmt: skip
NOTE_PARAGRAPHS = etree.XPath("w:p", namespaces=DOCX_NAMESPACES)
W = "{%s}" % DOCX_NAMESPACES["w"]
# Inside a paragraph: what is not its text now (tracked deletions and moves away, properties, the
# fallback copy of a drawing) or is read apart (text boxes: docx_text_box_lines).
NOT_PARAGRAPH_TEXT = {
    W + "del", W + "moveFrom", W + "pPr", W + "rPr", W + "sdtPr", W + "txbxContent",
    "{%s}Fallback" % DOCX_NAMESPACES["mc"],
}  # fmt: skip
PARAGRAPH_CHARACTERS = {W + "tab": "\t", W + "br": "\n", W + "cr": "\n", W + "noBreakHyphen": "-"}


def docx_paragraph_text(paragraph) -> str:
    """The text of a ``w:p`` element as the document reads now: its runs wherever they stand (in
    hyperlinks, tracked insertions, content controls, fields, smart tags), not tracked deletions,
    text boxes or the placeholder of a content control never filled in. python-docx's
    ``Paragraph.text`` reads only runs that are the paragraph's children or in hyperlinks, so a
    tracked insertion or a filled-in form field was lost."""
    parts: list[str] = []
    _collect_paragraph_text(paragraph, parts)
    return "".join(parts)


def _collect_paragraph_text(element, parts: list[str]) -> None:
    for child in element:
        tag = child.tag
        if not isinstance(tag, str) or tag in NOT_PARAGRAPH_TEXT:  # comments and processing instructions
            continue
        if tag == W + "sdt" and shows_placeholder(child):
            continue
        if tag == W + "t":
            parts.append(child.text or "")
        elif tag in PARAGRAPH_CHARACTERS:
            parts.append(PARAGRAPH_CHARACTERS[tag])
        else:
            _collect_paragraph_text(child, parts)


def shows_placeholder(content_control) -> bool:
    """A content control (``w:sdt``) never filled in, showing its placeholder ("Click or tap here to
    enter text.")."""
    return content_control.find(f"{W}sdtPr/{W}showingPlcHdr") is not None


def sdt_content(child):
    """The content of a content control that was filled in; None for any other element."""
    if child.tag != W + "sdt" or shows_placeholder(child):
        return None
    return child.find(W + "sdtContent")


def docx_blocks(document) -> Iterator:
    """The body's paragraphs and tables in order (:func:`docx_blocks_in`)."""
    return docx_blocks_in(document.element.body, document._body)


def docx_blocks_in(container, parent) -> Iterator:
    """The paragraphs and tables of a body or table cell (its element, and the python-docx object that
    owns it) in order, those in block-level content controls (``w:sdt``: a template's cover page, a
    form's fields) too, which python-docx's ``iter_inner_content`` and ``Cell.paragraphs`` skip."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in container:
        if child.tag == W + "p":
            yield Paragraph(child, parent)
        elif child.tag == W + "tbl":
            yield Table(child, parent)
        elif (content := sdt_content(child)) is not None:
            yield from docx_blocks_in(content, parent)


def xml_paragraph_text(paragraph) -> str:
    return docx_paragraph_text(paragraph).strip()


def docx_text_box_lines(paragraph) -> list[str]:
    """The text of the text boxes anchored in a body paragraph (its ``w:p`` element), a line a paragraph."""
    return [text for text in map(xml_paragraph_text, TEXT_BOX_PARAGRAPHS(paragraph)) if text]


def docx_note_lines(document) -> list[str]:
    """Each footnote's and endnote's text, in the order of their parts: they follow the body."""
    lines = []
    for relation in document.part.rels.values():
        if relation.is_external or not relation.reltype.endswith(("/footnotes", "/endnotes")):
            continue
        for note in NOTES(etree.fromstring(relation.target_part.blob)):
            text = " ".join(filter(None, map(xml_paragraph_text, NOTE_PARAGRAPHS(note))))
            if text:
                lines.append(text)
    return lines


def docx_header_footer_lines(document) -> list[str]:
    """The text of the headers and footers in effect (a section's own, its first page's and even pages'
    when the document turns those on), each distinct line once: they follow the body."""
    kinds = ["header", "footer"]
    if document.settings.odd_and_even_pages_header_footer:
        kinds += ["even_page_header", "even_page_footer"]
    lines: dict[str, None] = {}
    for section in document.sections:
        first_page = ["first_page_header", "first_page_footer"] if section.different_first_page_header_footer else []
        for part in (getattr(section, kind) for kind in kinds + first_page):
            if part.is_linked_to_previous:  # no definition of its own (the first section's: none at all)
                continue
            texts = [docx_paragraph_text(paragraph._p).strip() for paragraph in part.paragraphs]
            texts += [docx_row(row) for table in part.tables for row in docx_rows(table)]
            lines.update(dict.fromkeys(text for text in texts if text))
    return list(lines)


def docx_row(row) -> str:
    """One table row as text: a merged cell once (python-docx repeats it for every column it spans),
    each cell's paragraphs and nested tables' rows in order."""
    cells = []
    for cell in row.cells:
        if cells and cell._tc is cells[-1]._tc:
            continue
        cells.append(cell)
    return table_row(map(docx_cell_text, cells))


def docx_rows(table) -> Iterator:
    """A table's rows in order, those in content controls too (a form's repeating section wraps its
    rows in one), which python-docx's ``Table.rows`` skips."""
    from docx.table import _Row

    def walk(container) -> Iterator:
        for child in container:
            if child.tag == W + "tr":
                yield _Row(child, table)
            elif (content := sdt_content(child)) is not None:
                yield from walk(content)

    return walk(table._tbl)


def docx_cell_text(cell) -> str:
    """A table cell's paragraphs and nested tables' rows, in order, as one line."""
    from docx.table import Table

    return " ".join(
        " ".join(map(docx_row, docx_rows(block))) if isinstance(block, Table) else docx_paragraph_text(block._p)
        for block in docx_blocks_in(cell._tc, cell)
    )


def _docx_heading_level(style_name: str) -> int:
    """1 for 'Title' and 'Heading 1', n for 'Heading n', 0 for body styles."""
    if style_name == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style_name)
    return int(match.group(1)) if match else 0


def parse_pptx(data: bytes) -> ParsedDocument:
    """PPTX through python-pptx: one page per slide, its title a heading, then its shapes top to bottom
    (text frames, table rows, grouped shapes), then its speaker notes. Slide numbers and dates are left
    out, and a footer is read on the first slide that has it (not on every slide)."""
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        presentation = Presentation(io.BytesIO(data))
    except (PackageNotFoundError, *CORRUPT_PACKAGE_ERRORS) as error:
        raise office_open_error("PPTX", data, error) from error
    builder, footers_read = TextBuilder(), set()
    for slide in presentation.slides:
        builder.start_page()
        title = slide.shapes.title
        if title is not None and title.has_text_frame:
            builder.add_heading(1, " ".join(title.text_frame.text.split()))
        shapes = (shape for shape in slide.shapes if shape != title and not _slide_furniture(shape, footers_read))
        for shape in _reading_order(shapes):
            _add_pptx_shape(shape, builder)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            builder.add_paragraph(slide.notes_slide.notes_text_frame.text.strip())
    text = builder.text()
    title = (presentation.core_properties.title or "").strip()
    title = title or (builder.headings[0].title if builder.headings else first_line(text))
    return ParsedDocument(text, title, MIME_PPTX, "python-pptx", builder.page_offsets or [0], builder.headings)


def _slide_furniture(shape, footers_read: set[str]) -> bool:
    """A slide number or date placeholder, or a footer placeholder whose text an earlier slide had;
    a new footer's text is added to ``footers_read``."""
    from pptx.enum.shapes import PP_PLACEHOLDER

    if not shape.is_placeholder:
        return False
    kind = shape.placeholder_format.type
    if kind in (PP_PLACEHOLDER.SLIDE_NUMBER, PP_PLACEHOLDER.DATE):
        return True
    if kind != PP_PLACEHOLDER.FOOTER or not shape.has_text_frame:
        return False
    text = " ".join(shape.text_frame.text.split())
    repeated = text in footers_read
    footers_read.add(text)
    return repeated


def _reading_order(shapes) -> list:
    """Top to bottom, then left to right (placeholders without a position of their own first)."""
    return sorted(shapes, key=lambda shape: (shape.top or 0, shape.left or 0))


def _add_pptx_shape(shape, builder: TextBuilder) -> None:
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):
        for member in _reading_order(shape.shapes):
            _add_pptx_shape(member, builder)
    elif shape.has_text_frame:
        for paragraph in shape.text_frame.paragraphs:
            builder.add_paragraph(" ".join(paragraph.text.split()))
    elif getattr(shape, "has_table", False):
        for row in shape.table.rows:
            builder.add_paragraph(table_row(cell.text for cell in row.cells))


def parse_xlsx(data: bytes) -> ParsedDocument:
    """XLSX through openpyxl: one page per sheet that holds anything, its name a heading, then its rows
    (cells joined by `` | ``, values as Excel last computed them)."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    builder = TextBuilder()
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            for sheet in workbook.worksheets:  # read-only sheets stream their rows from the zip
                builder.add_sheet(sheet.title, sheet.iter_rows(values_only=True))
            title = (workbook.properties.title or "").strip()
        finally:
            workbook.close()
    except (InvalidFileException, *CORRUPT_PACKAGE_ERRORS) as error:
        raise office_open_error("XLSX", data, error) from error
    text = builder.text()
    # A sheet name is no title: without one set in the workbook, readers see the file name.
    return ParsedDocument(text, title or None, MIME_XLSX, "openpyxl", builder.page_offsets or [0], builder.headings)
