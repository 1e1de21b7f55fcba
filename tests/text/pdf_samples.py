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
