"""Small files of every parsed format, built in code for parser tests (and where the real PDFs are)."""

from __future__ import annotations

import datetime
import io
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PDFS = REPO / ".." / "shared" / "data" / "pdfs"  # the real PDFs, read in place, never copied


def blank_pdf() -> bytes:
    """A valid one-page PDF with no text on it (what a scan without OCR looks like)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    pdf.new_page(200, 200)
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def encrypted_pdf() -> bytes:
    """A PDF under the standard security handler with a user password (that we do not know)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -44 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    file_id = b"ab" * 16
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\n" % (
        len(objects) + 1,
        file_id,
        file_id,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def docx_bytes() -> bytes:
    """A small DOCX with a title, headings, paragraphs and a table."""
    import docx

    document = docx.Document()
    document.core_properties.title = "Pump maintenance"
    document.add_heading("Pump maintenance", level=1)
    document.add_paragraph("Check the seals every month.")
    document.add_heading("Parts", level=2)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "part", "interval"
    table.cell(1, 0).text, table.cell(1, 1).text = "impeller", "yearly"
    document.add_paragraph("Replace the impeller when it is worn.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pptx_bytes() -> bytes:
    """A three-slide PPTX: a title slide, bullets placed out of order with a group and notes, and a table."""
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    presentation.core_properties.title = "Quarterly pump review"
    opening = presentation.slides.add_slide(presentation.slide_layouts[0])
    opening.shapes.title.text = "Quarterly pump review"
    opening.placeholders[1].text = "Plant operations, Q3"
    bullets = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
    bullets.shapes.title.text = "Findings"
    lower = bullets.shapes.add_textbox(Inches(1), Inches(5), Inches(6), Inches(1))
    lower.text_frame.text = "Seal failures fell by a third."
    upper = bullets.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1))
    upper.text_frame.text = "Three pumps were rebuilt."
    upper.text_frame.add_paragraph().text = "Two impellers were replaced."
    group = bullets.shapes.add_group_shape()
    group.shapes.add_textbox(
        Inches(1), Inches(3.5), Inches(6), Inches(1)
    ).text_frame.text = "Grouped: vibration is down."
    bullets.notes_slide.notes_text_frame.text = "Mention the new supplier."
    table_slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    table_slide.shapes.title.text = "Costs"
    table = table_slide.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "item", "cost"
    table.cell(1, 0).text, table.cell(1, 1).text = "seals", "1200 EUR"
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def xlsx_bytes() -> bytes:
    """A workbook: a costs sheet (numbers, a date, a gap row, trailing empty cells), an empty sheet, a staff sheet."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.properties.title = "Plant costs"
    costs = workbook.active
    costs.title = "Costs"
    costs.append(["item", "cost", None])
    costs.append(["seals", 1200.0])
    costs.append([])
    costs.append(["ordered", datetime.datetime(2026, 3, 1)])
    workbook.create_sheet("Empty")
    staff = workbook.create_sheet("Staff")
    staff.append(["name", "role"])
    staff.append(["Ann", "  maintenance\nengineer "])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def eml_bytes() -> bytes:
    """An e-mail with an encoded subject, plain and HTML bodies, a DOCX, an image and a forwarded message attached."""
    from email.message import EmailMessage

    forwarded = EmailMessage()
    forwarded["Subject"] = "Supplier quote"
    forwarded["From"] = "bo@example.com"
    forwarded.set_content("The quote for new seals is 1200 EUR.")
    message = EmailMessage()
    message["Subject"] = "Pump =?utf-8?q?r=C3=A9view?= notes"
    message["From"] = "Ann <ann@example.com>"
    message["To"] = "ops@example.com"
    message["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
    message.set_content("Hello team,\n\nThe seals on pump 3 are worn.\n")
    message.add_alternative("<html><body><p>HTML copy of the body</p></body></html>", subtype="html")
    message.add_attachment(docx_bytes(), maintype="application", subtype="octet-stream", filename="pump.docx")
    message.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(64), maintype="image", subtype="png", filename="photo.png")
    message.add_attachment(forwarded)
    return message.as_bytes()


def rtf_bytes() -> bytes:
    """An RTF in code page 1251 (Cyrillic escapes), with a title in its info group and a font table."""
    return (
        rb"{\rtf1\ansi\ansicpg1251\deff0{\fonttbl{\f0\fswiss Arial;}}{\info{\title Pump notes}{\author Ann}}"
        rb"{\pard\b Pump maintenance\b0\par}"
        rb"{\pard \'cd\'e0\'f1\'ee\'f1 pump, 12\u8364? per visit.\par}"
        rb"{\pard Second paragraph with {\i italic} text.\par}}"
    )


def damaged_member(package: bytes, member: str) -> bytes:
    """``package`` (a zip) with the middle of one member's compressed bytes overwritten."""
    info = zipfile.ZipFile(io.BytesIO(package)).getinfo(member)
    local_header = package[info.header_offset : info.header_offset + 30]
    start = (
        info.header_offset
        + 30
        + int.from_bytes(local_header[26:28], "little")
        + int.from_bytes(local_header[28:30], "little")
    )
    middle = start + info.compress_size // 2
    return package[:middle] + b"\xff" * 16 + package[middle + 16 :]


def odt_bytes() -> bytes:
    """An OpenDocument text: a title, two heading levels, paragraphs, a list and a table."""
    from odf.opendocument import OpenDocumentText
    from odf import dc, text

    document = OpenDocumentText()
    document.meta.addElement(dc.Title(text="Pump maintenance"))
    document.text.addElement(text.H(outlinelevel=1, text="Pump maintenance"))
    document.text.addElement(text.P(text="Check the seals every month."))
    items = text.List()
    for entry in ("Drain the pump.", "Open the casing."):
        item = text.ListItem()
        item.addElement(text.P(text=entry))
        items.addElement(item)
    document.text.addElement(items)
    document.text.addElement(text.H(outlinelevel=2, text="Parts"))
    document.text.addElement(odf_table("Parts", [("part", "interval"), ("impeller", "yearly")]))
    return odf_bytes(document)


def odf_table(name: str, rows: list[tuple[str, ...]], empty_cells_after: int = 0):
    """An OpenDocument table of text cells; each row may end with one empty cell repeated that many times."""
    from odf import table

    grid = table.Table(name=name)
    for values in rows:
        row = odf_row(values)
        if empty_cells_after:
            row.addElement(table.TableCell(numbercolumnsrepeated=empty_cells_after))
        grid.addElement(row)
    return grid


def odf_row(values):
    """An OpenDocument table row of text cells."""
    from odf import table, text

    row = table.TableRow()
    for value in values:
        cell = table.TableCell()
        cell.addElement(text.P(text=value))
        row.addElement(cell)
    return row


def odf_bytes(document) -> bytes:
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def ods_bytes() -> bytes:
    """An OpenDocument spreadsheet: a costs sheet with empty cells repeated a thousand times, and an empty sheet."""
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf import table

    document = OpenDocumentSpreadsheet()
    document.spreadsheet.addElement(odf_table("Costs", [("item", "cost"), ("seals", "1200")], empty_cells_after=1000))
    document.spreadsheet.addElement(table.Table(name="Empty"))
    return odf_bytes(document)


def epub_bytes() -> bytes:
    """An EPUB of two chapters (HTML with headings) in spine order."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("pump-handbook")
    book.set_title("Pump handbook")
    book.set_language("en")
    chapters = []
    for number, (title, body) in enumerate([("Seals", "Check the seals every month."),
                                            ("Impellers", "Replace a worn impeller.")], 1):  # fmt: skip
        chapter = epub.EpubHtml(title=title, file_name=f"chapter{number}.xhtml", lang="en")
        chapter.content = f"<html><body><h1>{title}</h1><p>{body}</p></body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = chapters
    buffer = io.BytesIO()
    epub.write_epub(buffer, book)
    return buffer.getvalue()


def odp_bytes() -> bytes:
    """An OpenDocument presentation: two slides, each with a title frame and a text box, one with notes."""
    from odf.draw import Frame, Page, TextBox
    from odf.namespaces import PRESENTATIONNS
    from odf.opendocument import OpenDocumentPresentation
    from odf.presentation import Notes
    from odf.style import MasterPage, PageLayout
    from odf.text import P

    def frame(text: str, role: str | None = None) -> Frame:
        shape = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
        if role:
            shape.setAttrNS(PRESENTATIONNS, "class", role)
        box = TextBox()
        box.addElement(P(text=text))
        shape.addElement(box)
        return shape

    document = OpenDocumentPresentation()
    layout = PageLayout(name="layout")
    document.automaticstyles.addElement(layout)
    master = MasterPage(name="master", pagelayoutname=layout)
    document.masterstyles.addElement(master)
    for title, body, notes in [("Findings", "Three pumps were rebuilt.", "Mention the new supplier."),
                               ("Costs", "Seals cost 1200 EUR.", None)]:  # fmt: skip
        slide = Page(masterpagename=master)
        slide.addElement(frame(title, "title"))
        slide.addElement(frame(body))
        if notes:
            speaker = Notes()
            speaker.addElement(frame(notes, "notes"))
            slide.addElement(speaker)
        document.presentation.addElement(slide)
    return odf_bytes(document)


def with_member(package: bytes, name: str, content: bytes) -> bytes:
    """``package`` (a zip) with member ``name`` replaced by (or added as) ``content``."""
    source, buffer = zipfile.ZipFile(io.BytesIO(package)), io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            if info.filename != name:
                archive.writestr(info, source.read(info.filename))
        archive.writestr(name, content)
    return buffer.getvalue()


def encrypted_odt() -> bytes:
    """An ODT whose manifest says its parts are encrypted (what a password-protected file holds)."""
    manifest = zipfile.ZipFile(io.BytesIO(odt_bytes())).read("META-INF/manifest.xml")
    entry = b'<manifest:file-entry manifest:full-path="content.xml"><manifest:encryption-data/></manifest:file-entry>'
    return with_member(
        odt_bytes(), "META-INF/manifest.xml", manifest.replace(b"</manifest:manifest>", entry + b"</manifest:manifest>")
    )


def page_picture(lines: list[str], width: int = 1000, line_height: int = 48, font_size: int = 30):
    """A white page with ``lines`` printed on it in black (what a scanner sees), as a PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    image = Image.new("RGB", (width, line_height * (len(lines) + 2)), "white")
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines, 1):
        draw.text((40, number * line_height), line, fill="black", font=font)
    return image


def picture_bytes(lines: list[str], image_format: str) -> bytes:
    """``lines`` printed on a page and saved as ``image_format`` (PNG, JPEG, TIFF...)."""
    buffer = io.BytesIO()
    page_picture(lines).save(buffer, format=image_format)
    return buffer.getvalue()


def scanned_pdf(lines: list[str]) -> bytes:
    """A one-page PDF holding only a picture of ``lines``: no text layer, as a scanner writes it."""
    buffer = io.BytesIO()
    page_picture(lines).save(buffer, format="PDF", resolution=150)
    return buffer.getvalue()


def stamped_scan(lines: list[str], stamp: str) -> bytes:
    """:func:`scanned_pdf` with ``stamp`` (a page number, a Bates stamp; lines split at ``\\n``) added as
    real text along the bottom."""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    pdf = pdfium.PdfDocument(scanned_pdf(lines))
    page = pdf[0]
    for number, stamp_line in enumerate(stamp.split("\n")):
        text = pdfium_c.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", ctypes.c_float(7))
        encoded = (stamp_line + "\0").encode("utf-16-le")
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        pdfium_c.FPDFText_SetText(text, ctypes.cast(buffer, ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
        pdfium_c.FPDFPageObj_Transform(text, 1, 0, 0, 1, 5, 5 + 8 * number)
        pdfium_c.FPDFPage_InsertObject(page.raw, text)
    pdfium_c.FPDFPage_GenerateContent(page.raw)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()
