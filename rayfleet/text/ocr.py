"""Text from scanned pages and pictures: OCR with RapidOCR, read in the order a person reads.

RapidOCR runs PaddleOCR's PP-OCRv4 detection and recognition models on onnxruntime; the
models ship inside its PyPI wheel (``rapidocr-onnxruntime``), so nothing is downloaded.
It finds lines of text with their boxes; :func:`reading_order` puts them in reading order
with a recursive XY-cut: a block splits at a gutter between two columns of prose (each
column read whole, top to bottom; a title or paragraph running across the gutter is read in
its place between them), else at every horizontal gap, until single lines remain. Table and
form cells with short texts are never split into columns, so a row stays a row, its cells
joined with `` | `` as the other parsers join table cells (cells holding whole sentences may
be read column by column)::

    text = read_image(Image.open("scan.png"), OcrConfig())

A page scanned upside down or on its side shows as lines found but mostly not recognised,
or standing on end; such a page is read again turned by 90, 180 and 270 degrees, and the
turn that recognises the most characters confidently on lines across the page wins.
(RapidOCR's own line-angle classifier stays off: it turned long upright lines over and lost
them.)

Known limit: the recognition model sometimes drops the space between two words.
"""

from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass

from pydantic import Field

from rayfleet.config import BaseConfig
from rayfleet.text.document import normalize_text

# A column split needs prose on both sides: boxes this long (characters), at the median.
MIN_COLUMN_LINE_CHARS = 15
# Boxes further apart than this (in line heights) on one line are separate cells.
CELL_GAP_LINE_HEIGHTS = 1.5
# Lines further apart than this (in line heights) start a new paragraph.
PARAGRAPH_GAP_LINE_HEIGHTS = 0.8


class OcrConfig(BaseConfig):
    enabled: bool = Field(
        True, description="OCR PDF pages without a text layer (scans) and image files; false sets them aside."
    )
    dpi: int = Field(150, ge=50, le=600, description="Resolution a PDF page is rendered at for OCR.")
    min_text_chars: int = Field(
        20, ge=0, description="A PDF page holding a picture and fewer text characters than this is OCR'd."
    )
    scan_text_chars: int = Field(
        200,
        ge=0,
        description="A PDF page mostly covered by a picture (a scan) is OCR'd while its text layer "
        "(a stamp, a page number) is shorter than this; a searchable scan's hidden text is longer and kept.",
    )
    min_score: float = Field(0.5, ge=0, le=1, description="Recognised lines less certain than this are dropped.")
    max_pixels: int = Field(
        60_000_000, ge=1, description="Images larger than this are set aside (a decompression bomb guard)."
    )


@dataclass(frozen=True)
class TextBox:
    """One recognised line of text and the upright rectangle around it (pixels, y down)."""

    left: float
    top: float
    right: float
    bottom: float
    text: str

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2


def read_image(image, config: OcrConfig) -> str:
    """The text of a PIL image, in reading order ('' when it holds none)."""
    upright = image.convert("RGB")
    lines = recognised_lines(upright)
    if looks_turned(lines, config):
        turned = [recognised_lines(upright.rotate(angle, expand=True)) for angle in (90, 180, 270)]
        lines = max([lines, *turned], key=lambda candidate: upright_characters(candidate, config))
    kept = [box for box, score in lines if box.text and score >= config.min_score]
    return normalize_text(boxes_text(reading_order(kept))).strip()


def recognised_lines(image) -> list[tuple[TextBox, float]]:
    """Every line OCR finds in an RGB image, with the recogniser's confidence, however low."""
    import numpy as np

    result, _ = ocr_engine()(np.asarray(image))
    return text_boxes(result or [])


def looks_turned(lines: list[tuple[TextBox, float]], config: OcrConfig) -> bool:
    """Lines found but most not recognised, or standing on end: the page may be upside down or on its side."""
    upright = sum(read_across(box, score, config) for box, score in lines)
    return bool(lines) and upright < len(lines) / 2


def upright_characters(lines: list[tuple[TextBox, float]], config: OcrConfig) -> int:
    """Characters recognised confidently on lines that run across the page (read in layout order)."""
    return sum(len(box.text) for box, score in lines if read_across(box, score, config))


def read_across(box: TextBox, score: float, config: OcrConfig) -> bool:
    """A line recognised confidently that runs across the page, not standing on end."""
    return score >= config.min_score and box.width >= box.height


@functools.lru_cache(maxsize=1)
def ocr_engine():
    """RapidOCR, loaded once per process, on as many threads as the process may use; keeps every line."""
    from rapidocr_onnxruntime import RapidOCR

    threads = int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    return RapidOCR(text_score=0.0, use_cls=False, intra_op_num_threads=threads, inter_op_num_threads=1)


def text_boxes(result: list) -> list[tuple[TextBox, float]]:
    """RapidOCR's ``[corners, text, score]`` lines as upright boxes with their scores (a text may be empty)."""
    lines = []
    for corners, text, score in result:
        xs, ys = [point[0] for point in corners], [point[1] for point in corners]
        lines.append((TextBox(min(xs), min(ys), max(xs), max(ys), text.strip()), float(score)))
    return lines


def reading_order(boxes: list[TextBox]) -> list[TextBox]:
    """``boxes`` in reading order (recursive XY-cut; see the module docstring)."""
    if len(boxes) < 2:
        return list(boxes)
    line_height = statistics.median(box.height for box in boxes)
    parts = column_split(boxes, line_height) or spanned_column_split(boxes, line_height) or band_split(boxes)
    if parts:
        return [box for part in parts for box in reading_order(part)]
    return lines_in_order(boxes, line_height)


def lines_in_order(boxes: list[TextBox], line_height: float) -> list[TextBox]:
    """A block with no gap (lines of a tilted scan overlap): lines by their middles, each left to right."""
    lines: list[list[TextBox]] = []
    for box in sorted(boxes, key=lambda box: box.middle):
        if lines and box.middle - lines[-1][0].middle <= line_height / 2:
            lines[-1].append(box)
        else:
            lines.append([box])
    return [box for line in lines for box in sorted(line, key=lambda box: box.left)]


def column_split(boxes: list[TextBox], line_height: float) -> list[list[TextBox]] | None:
    """The block cut at a gutter no box crosses into a left and a right column, when both hold prose."""
    cut = gutter(boxes, line_height)
    if cut is None:
        return None
    return [[box for box in boxes if box.right <= cut], [box for box in boxes if box.left >= cut]]


def spanned_column_split(boxes: list[TextBox], line_height: float) -> list[list[TextBox]] | None:
    """Columns under and between lines that run across the gutter (a title, a full-width paragraph).

    The gutter is looked for among the boxes narrower than half the block; the block is then
    cut above and below every box that crosses it, so each stretch of columns is read whole.
    """
    span = max(box.right for box in boxes) - min(box.left for box in boxes)
    narrow = [box for box in boxes if box.width < span / 2]
    cut = gutter(narrow, line_height) if len(narrow) < len(boxes) else None
    if cut is None:
        return None
    parts: list[list[TextBox]] = [[]]
    for box in sorted(boxes, key=lambda box: box.middle):
        if box.left < cut < box.right:
            parts += [[box], []]
        else:
            parts[-1].append(box)
    parts = [part for part in parts if part]
    return parts if len(parts) > 1 else None


def gutter(boxes: list[TextBox], line_height: float) -> float | None:
    """Where the widest vertical gap between the boxes lies, when it is a gutter between two columns of prose."""
    if len(boxes) < 4:
        return None
    gap, cut = widest_gap([(box.left, box.right) for box in boxes])
    if gap <= 0 or gap < line_height:
        return None
    for side in ([box for box in boxes if box.right <= cut], [box for box in boxes if box.left >= cut]):
        if len(side) < 2 or statistics.median(len(box.text) for box in side) < MIN_COLUMN_LINE_CHARS:
            return None
    return cut


def band_split(boxes: list[TextBox]) -> list[list[TextBox]] | None:
    """The block cut at every horizontal gap into bands (None: no gap, the boxes form one line)."""
    bands: list[list[TextBox]] = []
    reach = None
    for box in sorted(boxes, key=lambda box: box.top):
        if reach is None or box.top >= reach:
            bands.append([])
        bands[-1].append(box)
        reach = box.bottom if reach is None else max(reach, box.bottom)
    return bands if len(bands) > 1 else None


def widest_gap(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """The widest stretch no span covers, between the first start and the last end: (width, middle)."""
    best, cut = 0.0, 0.0
    ordered = sorted(spans)
    reach = ordered[0][1]
    for start, end in ordered[1:]:
        if start - reach > best:
            best, cut = start - reach, (start + reach) / 2
        reach = max(reach, end)
    return best, cut


def boxes_text(ordered: list[TextBox]) -> str:
    """Boxes in reading order as text: a line's boxes joined, a blank line between paragraphs."""
    if not ordered:
        return ""
    line_height = statistics.median(box.height for box in ordered)
    parts = [ordered[0].text]
    for previous, box in zip(ordered, ordered[1:]):
        if previous.top <= box.middle <= previous.bottom and box.left >= previous.right:
            cell = box.left - previous.right > CELL_GAP_LINE_HEIGHTS * line_height
            parts.append(" | " if cell else " ")
        elif box.top - previous.bottom > PARAGRAPH_GAP_LINE_HEIGHTS * line_height or box.bottom <= previous.top:
            parts.append("\n\n")  # a wide gap, or the top of the next column
        else:
            parts.append("\n")
        parts.append(box.text)
    return "".join(parts)
