"""Pictures of text (scans, photos, screenshots) read by OCR (:mod:`rayfleet.text.ocr`).

A multi-page TIFF's pages are the document's pages; an animated GIF or WebP is read from its
first frame only (its frames are moments of one picture, not pages). Every page is checked
against ``ocr.max_pixels`` before it is decoded; transparent pictures are laid on white and
16-bit greyscale scaled to 8 bits, so dark text on a transparent or deep background stays dark.
"""

from __future__ import annotations

import io

from rayfleet.text.document import MIME_TIFF, ParsedDocument, ParseError, first_line, joined_pages
from rayfleet.text.ocr import OcrConfig, read_image


def parse_image(data: bytes, mime_type: str, ocr: OcrConfig | None = None) -> ParsedDocument:
    """PNG, JPEG, TIFF, BMP, WebP or GIF through OCR; each page of a multi-page TIFF a page.

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
    frames = ImageSequence.Iterator(image) if mime_type == MIME_TIFF else [image]
    pages = []
    try:
        for frame in frames:
            if frame.width * frame.height > ocr.max_pixels:
                size = f"{frame.width}x{frame.height} pixels"
                raise ParseError(f"image too large: {size} > ocr.max_pixels={ocr.max_pixels}")
            pages.append(read_image(on_white(ImageOps.exif_transpose(frame)), ocr))
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ParseError):
            raise
        raise ParseError(f"corrupt image: {error}") from error  # damaged data shows only while decoding
    text, offsets = joined_pages(pages)
    return ParsedDocument(text, first_line(text), mime_type, "rapidocr", offsets)


def on_white(image):
    """The picture as OCR should see it: 16-bit grey scaled to 8 bits, transparency laid on white."""
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        image = Image.alpha_composite(background, rgba)
    return image
