"""Benchmark: how well and how fast OCR reads scanned pages, against the same pages' text layer.

    python -m bench.ocr [pages=[10,40,100,200]] [scan_dpi=300] [jpeg_quality=75] [ocr.dpi=150]

Real pages (the gnuplot manual and the Octave reference card of ``../shared/data/pdfs``) are
turned into what a scanner writes: each page rendered at ``scan_dpi`` in greyscale and saved
as a JPEG picture in a PDF with no text layer. The scan goes through the production path,
:func:`rayfleet.text.parsing.parse_file` (PDFium, then OCR for the page), and its words are
compared with the original page's text layer, the reference. Prints one JSON line: per page
the word F1 (bag of words, lower case), the word order similarity (difflib's ratio over the two
word sequences: reading order counts) and seconds; their means and the worst page.
"""

from __future__ import annotations

import collections
import difflib
import io
import json
import re
import statistics
import sys
import time
from pathlib import Path

from pydantic import Field

from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.text.ocr import OcrConfig
from rayfleet.text.parsing import parse_file

PDFS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pdfs"


class OcrBenchConfig(BaseConfig):
    pages: list[int] = Field([10, 40, 100, 200], description="Pages of the gnuplot manual (0-based).")
    refcard_pages: list[int] = Field([0, 1], description="Pages of the reference card (three dense columns).")
    scan_dpi: int = Field(300, ge=72, description="Resolution of the simulated scan.")
    jpeg_quality: int = Field(75, ge=10, le=95, description="JPEG quality of the scanned picture.")
    ocr: OcrConfig = Field(default_factory=OcrConfig, description="The OCR settings under test.")


def scanned(page, config: OcrBenchConfig) -> bytes:
    """The page as a scanner writes it: a greyscale JPEG picture in a PDF, no text layer."""
    picture = page.render(scale=config.scan_dpi / 72).to_pil().convert("L")
    buffer = io.BytesIO()
    picture.save(buffer, format="PDF", resolution=config.scan_dpi, quality=config.jpeg_quality)
    return buffer.getvalue()


def words(text: str) -> list[str]:
    """The text's words, lower case (runs of word characters: a TOC's dot leaders are none)."""
    return re.findall(r"\w+", text.lower())


def word_f1(reference: str, found: str) -> float:
    """Bag-of-words F1 of ``found`` against ``reference``."""
    expected, got = collections.Counter(words(reference)), collections.Counter(words(found))
    common = sum((expected & got).values())
    if not common:
        return 0.0
    precision, recall = common / sum(got.values()), common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def word_order_similarity(reference: str, found: str) -> float:
    """How alike the two word sequences are, order included (1: the same words in the same order)."""
    return difflib.SequenceMatcher(None, words(reference), words(found), autojunk=False).ratio()


def measure_page(pdf, name: str, index: int, config: OcrBenchConfig) -> dict:
    page = pdf[index]
    reference = page.get_textpage().get_text_range()
    scan = scanned(page, config)
    started = time.perf_counter()
    document = parse_file(f"scan-{index}.pdf", scan, config.ocr)
    seconds = time.perf_counter() - started
    f1, order = word_f1(reference, document.text), word_order_similarity(reference, document.text)
    return {"pdf": name, "page": index, "words": len(words(reference)), "f1": round(f1, 3), "order": round(order, 3),
            "seconds": round(seconds, 2)}  # fmt: skip


def main(config: OcrBenchConfig) -> dict:
    import pypdfium2 as pdfium

    results = []
    for name, pages in (("gnuplot.pdf", config.pages), ("refcard-a4.pdf", config.refcard_pages)):
        pdf = pdfium.PdfDocument((PDFS / name).read_bytes())
        results += [measure_page(pdf, name, index, config) for index in pages]
    line = {
        "bench": "ocr",
        "ocr_dpi": config.ocr.dpi,
        "scan_dpi": config.scan_dpi,
        "pages": len(results),
        "mean_word_f1": round(statistics.mean(result["f1"] for result in results), 3),
        "worst_word_f1": min(result["f1"] for result in results),
        "mean_word_order_similarity": round(statistics.mean(result["order"] for result in results), 3),
        "mean_seconds_per_page": round(statistics.mean(result["seconds"] for result in results), 2),
        "per_page": results,
    }
    print(json.dumps(line), flush=True)
    return line


if __name__ == "__main__":
    main(config_or_exit(OcrBenchConfig, sys.argv[1:]))
