"""OCR of scans and pictures: reading order on known boxes, and the real RapidOCR models on printed pages."""

from __future__ import annotations

import difflib
import io

import pypdfium2 as pdfium
import pytest

from rayfleet.text.ocr import OcrConfig, TextBox, boxes_text, reading_order
from rayfleet.text.parsing import MIME_PNG, MIME_TIFF, ParseError, detect_mime_type, parse_file
from tests.text.samples import PDFS, page_picture, picture_bytes, scanned_pdf

NOTICE = ["Replace the gasket every 400 operating hours.", "The north valve leaked on 12 March."]


def squeezed(text: str) -> str:
    """Lower case without whitespace: the recognition model sometimes drops a space between words."""
    return "".join(text.split()).lower()


def reads_as(found: str, printed: str) -> bool:
    """``found`` is ``printed`` but for a character misread here and there (``4oo`` for ``400``)."""
    return difflib.SequenceMatcher(None, squeezed(found), squeezed(printed)).ratio() >= 0.9


def line(left: float, top: float, right: float, text: str, height: float = 20) -> TextBox:
    return TextBox(left, top, right, top + height, text)


def test_two_columns_are_read_one_after_the_other_below_a_title_across_both():
    title = line(100, 10, 900, "Pump station maintenance report for the year")
    left = [line(100, 60 + 30 * n, 480, f"left column line number {n} of the report") for n in range(4)]
    right = [line(540, 60 + 30 * n, 900, f"right column line number {n} of the report") for n in range(4)]
    ordered = reading_order([*right, title, *reversed(left)])
    assert ordered == [title, *left, *right]


def test_table_cells_stay_in_rows_joined_like_other_parsers_tables():
    rows = [("Impeller", "yearly"), ("Gasket", "400 h"), ("Bearing", "monthly")]
    boxes = [box for n, (part, interval) in enumerate(rows)
             for box in (line(100, 30 * n, 220, part), line(600, 30 * n + 2, 700, interval))]  # fmt: skip
    assert boxes_text(reading_order(boxes[::-1])) == "Impeller | yearly\nGasket | 400 h\nBearing | monthly"


def test_lines_of_a_tilted_scan_overlap_but_keep_their_order():
    tilted = [TextBox(100, 40 * n, 900, 40 * n + 55, f"line {n} of a page scanned at a slant") for n in range(3)]
    assert boxes_text(reading_order(tilted[::-1])) == "\n".join(box.text for box in tilted)


def test_a_wide_gap_between_lines_starts_a_paragraph():
    text = boxes_text([line(100, 0, 800, "First paragraph."), line(100, 25, 800, "Still the first."),
                       line(100, 90, 800, "Second paragraph.")])  # fmt: skip
    assert text == "First paragraph.\nStill the first.\n\nSecond paragraph."


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "TIFF"])
def test_a_picture_of_text_is_read(image_format):
    data = picture_bytes(NOTICE, image_format)
    document = parse_file(f"notice.{image_format.lower()}", data)
    assert reads_as(document.text, " ".join(NOTICE)), document.text
    assert document.parser == "rapidocr" and document.page_count == 1
    assert document.title and reads_as(document.title, NOTICE[0])


def test_every_page_of_a_multi_page_tiff_is_a_page():
    buffer = io.BytesIO()
    first, second = page_picture(NOTICE[:1]), page_picture(NOTICE[1:])
    first.save(buffer, format="TIFF", save_all=True, append_images=[second])
    document = parse_file("scan.tif", buffer.getvalue())
    assert document.page_count == 2
    assert reads_as(document.text[document.page_offsets[1] :], NOTICE[1])


def test_a_scanned_pdf_page_is_read_and_a_page_with_text_keeps_its_text_layer():
    text_pdf = pdfium.PdfDocument((PDFS / "refcard-a4.pdf").read_bytes())
    mixed = pdfium.PdfDocument.new()
    mixed.import_pages(text_pdf, [0])
    mixed.import_pages(pdfium.PdfDocument(scanned_pdf(NOTICE)), [0])
    buffer = io.BytesIO()
    mixed.save(buffer)
    document = parse_file("mixed.pdf", buffer.getvalue())
    layer = parse_file("refcard-a4.pdf", (PDFS / "refcard-a4.pdf").read_bytes())
    assert document.parser == "pypdfium2+rapidocr" and document.page_count == 2
    assert document.text[: document.page_offsets[1]].strip() == layer.text[: layer.page_offsets[1]].strip()
    assert reads_as(document.text[document.page_offsets[1] :], " ".join(NOTICE))


def test_without_ocr_a_scan_is_set_aside_with_what_would_read_it():
    with pytest.raises(ParseError, match=r"no extractable text \(a scanned PDF needs OCR: ocr.enabled=true\)"):
        parse_file("scan.pdf", scanned_pdf(NOTICE), OcrConfig(enabled=False))
    with pytest.raises(ParseError, match="needs OCR, which ocr.enabled=false turns off"):
        parse_file("notice.png", picture_bytes(NOTICE, "PNG"), OcrConfig(enabled=False))


def test_bad_pictures_raise_a_clear_reason():
    with pytest.raises(ParseError, match="unreadable image"):
        parse_file("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ParseError, match=r"image too large: 1000x192 pixels > ocr.max_pixels=1000"):
        parse_file("notice.png", picture_bytes(NOTICE, "PNG"), OcrConfig(max_pixels=1000))
    blank = io.BytesIO()
    page_picture([]).save(blank, format="PNG")
    with pytest.raises(ParseError, match="no extractable text"):
        parse_file("blank.png", blank.getvalue())


def test_pictures_are_recognised_by_their_bytes():
    assert detect_mime_type("download", picture_bytes(NOTICE, "PNG")) == MIME_PNG
    assert detect_mime_type("scan", picture_bytes(NOTICE, "TIFF")) == MIME_TIFF
    assert detect_mime_type("NOTES", b"BMW service notes: change the oil yearly.\n") != "image/bmp"
