"""Text from scanned pages and pictures: OCR with RapidOCR, read in the order a person reads.

RapidOCR runs PaddleOCR's PP-OCRv4 detection and recognition models on onnxruntime; the
models ship inside its PyPI wheel (``rapidocr-onnxruntime``), so nothing is downloaded.
It finds lines of text with their boxes; :func:`reading_order` puts them in reading order
with a recursive XY-cut: a block splits at a gutter between two columns of prose (each
column read whole, top to bottom), else at its widest horizontal gap, until single lines
remain. Table and form cells (short texts) are never split into columns, so a row stays a
row, its cells joined with `` | `` as the other parsers join table cells::

    text = read_image(Image.open("scan.png"), OcrConfig())

Known limits: the recognition model sometimes drops the space between two words; pages
scanned upside down or turned by 90 degrees are not turned back (RapidOCR's line-angle
classifier is off: it turned long upright lines over and lost them).
"""

from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass

from pydantic import Field

from rayfleet.config import BaseConfig

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
        20, ge=0, description="A PDF page holding an image and fewer text characters than this is OCR'd."
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
    def middle(self) -> float:
        return (self.top + self.bottom) / 2


def read_image(image, config: OcrConfig) -> str:
    """The text of a PIL image, in reading order ('' when it holds none)."""
    import numpy as np

    result, _ = ocr_engine(config.min_score)(np.asarray(image.convert("RGB")))
    return boxes_text(reading_order(text_boxes(result or [])))


@functools.lru_cache(maxsize=2)
def ocr_engine(min_score: float):
    """RapidOCR, loaded once per process, on as many threads as the process may use."""
    from rapidocr_onnxruntime import RapidOCR

    threads = int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    return RapidOCR(text_score=min_score, use_cls=False, intra_op_num_threads=threads, inter_op_num_threads=1)


def text_boxes(result: list) -> list[TextBox]:
    """RapidOCR's ``[corners, text, score]`` lines as upright boxes; empty texts dropped."""
    boxes = []
    for corners, text, _score in result:
        xs, ys = [point[0] for point in corners], [point[1] for point in corners]
        if text.strip():
            boxes.append(TextBox(min(xs), min(ys), max(xs), max(ys), text.strip()))
    return boxes


def reading_order(boxes: list[TextBox]) -> list[TextBox]:
    """``boxes`` in reading order (recursive XY-cut; see the module docstring)."""
    if len(boxes) < 2:
        return list(boxes)
    line_height = statistics.median(box.height for box in boxes)
    columns = column_split(boxes, line_height)
    if columns:
        return [box for column in columns for box in reading_order(column)]
    bands = widest_gap_split(boxes)
    if bands:
        return [box for band in bands for box in reading_order(band)]
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
    """The block cut at its widest vertical gutter into a left and a right part, when both hold prose."""
    gap, cut = widest_gap([(box.left, box.right) for box in boxes])
    if gap < line_height:
        return None
    left = [box for box in boxes if box.right <= cut]
    right = [box for box in boxes if box.left >= cut]
    for side in (left, right):
        if len(side) < 2 or statistics.median(len(box.text) for box in side) < MIN_COLUMN_LINE_CHARS:
            return None
    return [left, right]


def widest_gap_split(boxes: list[TextBox]) -> list[list[TextBox]] | None:
    """The block cut at its widest horizontal gap into an upper and a lower part (None: no gap)."""
    gap, cut = widest_gap([(box.top, box.bottom) for box in boxes])
    if gap <= 0:
        return None
    return [[box for box in boxes if box.bottom <= cut], [box for box in boxes if box.top >= cut]]


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
