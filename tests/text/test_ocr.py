"""OCR of scans and pictures: reading order on known boxes, and the real RapidOCR models on printed pages."""

from __future__ import annotations

import difflib
import io

import pypdfium2 as pdfium
import pytest

from rayfleet.text.ocr import OcrConfig, TextBox, boxes_text, reading_order
from rayfleet.text.parsing import MIME_PNG, MIME_TIFF, ParseError, detect_mime_type, parse_file
from tests.text.samples import PDFS, page_picture, picture_bytes, scanned_pdf, stamped_scan

NOTICE = ["Replace the gasket every 400 operating hours.", "The north valve leaked on 12 March."]


def squeezed(text: str) -> str:
    """Lower case without whitespace: the recognition model sometimes drops a space between words."""
    return "".join(text.split()).lower()


def reads_as(found: str, printed: str) -> bool:
    """``found`` is ``printed`` but for a character misread here and there (``4oo`` for ``400``)."""
    return difflib.SequenceMatcher(None, squeezed(found), squeezed(printed)).ratio() >= 0.9


def reads_within(found: str, printed: str) -> bool:
    """``printed`` is in ``found``, in order, but for a character misread here and there."""
    blocks = difflib.SequenceMatcher(None, squeezed(printed), squeezed(found), autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks) >= 0.9 * len(squeezed(printed))


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


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_a_page_scanned_upside_down_or_on_its_side_is_turned_back(angle):
    buffer = io.BytesIO()
    page_picture(NOTICE).rotate(angle, expand=True).save(buffer, format="PNG")
    assert reads_as(parse_file("turned.png", buffer.getvalue()).text, " ".join(NOTICE))


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


def test_columns_between_lines_across_the_gutter_are_each_read_whole():
    def column_lines(top: float, side: str) -> list[TextBox]:
        left = 100 if side == "left" else 540
        return [line(left, top + 30 * n, left + 380, f"{side} column line {n} below {top:g}") for n in range(3)]

    title = line(100, 0, 920, "A title across both columns of the page")
    middle = line(100, 130, 920, "A paragraph across the page, one line-gap below the columns")
    upper = column_lines(30, "left") + column_lines(30, "right")
    lower = column_lines(160, "left") + column_lines(160, "right")
    ordered = reading_order([*lower[::-1], middle, *upper, title])
    assert ordered == [title, *upper, middle, *lower]


def test_reading_order_keeps_every_box_once_on_any_layout():
    import random

    generator = random.Random(7)
    for _ in range(300):
        boxes = []
        for n in range(generator.randint(0, 40)):
            left, top = generator.uniform(0, 900), generator.uniform(0, 1200)
            width, height = generator.uniform(0, 500), generator.choice([0, generator.uniform(5, 40)])
            boxes.append(TextBox(left, top, left + width, top + height, "w" * generator.randint(1, 40) + str(n)))
        assert sorted(reading_order(boxes), key=id) == sorted(boxes, key=id)


def test_many_lines_read_without_deep_recursion():
    boxes = [line(100, 30 * n, 900, f"line {n} of a very long page") for n in range(3000)]
    assert reading_order(boxes[::-1]) == boxes


@pytest.mark.parametrize("stamp", ["12", "ABC-0001234 CONFIDENTIAL"])
def test_a_scan_with_a_stamped_text_layer_is_still_read(stamp):
    document = parse_file("stamped.pdf", stamped_scan(NOTICE, stamp))
    assert document.parser == "pypdfium2+rapidocr"
    assert reads_within(document.text, " ".join(NOTICE)), document.text


def test_a_searchable_scan_keeps_its_own_text_layer():
    hidden = "\n".join(f"Line {n} of the text an earlier OCR pass left under the picture." for n in range(5))
    document = parse_file("searchable.pdf", stamped_scan(NOTICE, hidden))
    assert "Line 4 of the text an earlier OCR pass" in document.text
    assert document.parser == "pypdfium2", "the hidden text of a scan already OCR'd is kept, not read again"


def test_dark_text_on_a_transparent_or_16_bit_picture_stays_dark():
    import numpy as np
    from PIL import Image

    grey = page_picture(NOTICE).convert("L")
    transparent = Image.merge("LA", [Image.new("L", grey.size, 0), grey.point(lambda value: 255 - value)])
    deep = Image.fromarray(np.where(np.asarray(grey) < 128, 12000, 60000).astype(np.uint16))
    for picture in (transparent, deep):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        assert reads_as(parse_file("notice.png", buffer.getvalue()).text, " ".join(NOTICE)), picture.mode


def test_an_animation_is_read_from_its_first_frame_and_every_tiff_page_is_size_checked():
    frames = [page_picture([f"Frame {n} of the welcome banner."]) for n in range(4)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    document = parse_file("banner.gif", gif.getvalue())
    assert document.page_count == 1 and reads_as(document.text, "Frame 0 of the welcome banner.")
    tiff = io.BytesIO()
    page_picture([]).resize((10, 10)).save(tiff, format="TIFF", save_all=True, append_images=[page_picture(NOTICE)])
    with pytest.raises(ParseError, match=r"image too large: 1000x192 pixels > ocr.max_pixels=5000"):
        parse_file("scan.tif", tiff.getvalue(), OcrConfig(max_pixels=5000))


def test_a_camera_raw_file_is_not_taken_for_a_picture_of_text():
    raw = picture_bytes(NOTICE, "TIFF")  # a .nef or .dng starts as a TIFF does
    with pytest.raises(ParseError, match="unknown file type '.nef'"):
        parse_file("holiday.nef", raw)


def test_a_picture_attached_to_an_e_mail_is_read_as_the_ocr_config_says():
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["Subject"] = "plant@example.com", "Valve notice"
    message.set_content("See the attached notice.")
    message.add_attachment(picture_bytes(NOTICE, "PNG"), maintype="image", subtype="png", filename="notice.png")
    data = message.as_bytes()
    assert reads_within(parse_file("notice.eml", data).text, " ".join(NOTICE))
    assert "gasket" not in parse_file("notice.eml", data, OcrConfig(enabled=False)).text.lower()
