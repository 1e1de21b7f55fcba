"""Pictures of text (scans, photos, screenshots): every frame read by OCR (:mod:`rayfleet.text.ocr`)."""

from __future__ import annotations

import io

from rayfleet.text.document import ParsedDocument, ParseError, first_line, joined_pages, normalize_text
from rayfleet.text.ocr import OcrConfig, read_image


def parse_image(data: bytes, mime_type: str, ocr: OcrConfig | None = None) -> ParsedDocument:
    """PNG, JPEG, TIFF, BMP, WebP or GIF through OCR; each frame (a multi-page TIFF's pages) a page.

    Raises:
        ParseError: OCR turned off, an unreadable or oversized image.
    """
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    ocr = ocr or OcrConfig()
    if not ocr.enabled:
        raise ParseError("an image: its text needs OCR, which ocr.enabled=false turns off")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise ParseError(f"unreadable image: {error}") from error
    if image.width * image.height > ocr.max_pixels:
        raise ParseError(f"image too large: {image.width}x{image.height} pixels > ocr.max_pixels={ocr.max_pixels}")
    try:
        frames = [normalize_text(read_image(ImageOps.exif_transpose(frame), ocr)).strip()
                  for frame in ImageSequence.Iterator(image)]  # fmt: skip
    except (OSError, SyntaxError, ValueError) as error:  # damaged data shows only while decoding
        raise ParseError(f"corrupt image: {error}") from error
    text, offsets = joined_pages(frames)
    return ParsedDocument(text, first_line(text), mime_type, "rapidocr", offsets)
