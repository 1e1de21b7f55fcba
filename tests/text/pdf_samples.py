"""Small PDFs built in code for parser tests: a blank one and an encrypted one."""

from __future__ import annotations

import io
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
    group.shapes.add_textbox(Inches(1), Inches(3.5), Inches(6), Inches(1)).text_frame.text = "Grouped: vibration is down."
    bullets.notes_slide.notes_text_frame.text = "Mention the new supplier."
    table_slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    table_slide.shapes.title.text = "Costs"
    table = table_slide.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "item", "cost"
    table.cell(1, 0).text, table.cell(1, 1).text = "seals", "1200 EUR"
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()
