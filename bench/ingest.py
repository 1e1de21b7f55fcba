"""Benchmark: the Ray Data ingestion job against a plain single-process loop, same files.

    python -m bench.ingest [slice_pages=[10,20,40]] [chunking.max_tokens=256]

The corpus is the real PDFs of ``../shared/data/pdfs`` (the 311-page gnuplot manual and
the Octave reference card) plus the manual cut into files of ``slice_pages`` pages
each (real text, distinct files), written to a temporary folder. Both paths do the
same work per file (read, hash, parse with PDFium, chunk with the tokenizer) and write
the same Parquet tables:

- ``baseline``: a plain loop calling :class:`rayfleet.ingestion.FileIngester` file by
  file in this process, writing each table once at the end (``jobs.ingest.commit``);
- ``ray``: ``jobs.ingest.main`` (actor pool sized from the cluster, per-batch commits)
  on a local Ray started before the clock (a standing cluster), actor start-up included.

Prints one JSON line with pages/s and chunks/s for each and the ratio.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from pydantic import Field

from rayfleet import storage
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.ingestion import ChunkingConfig, FileIngester
from rayfleet.tables import new_run_id

PDFS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pdfs"


class IngestBenchConfig(BaseConfig):
    pdfs: str = Field(str(PDFS), description="Folder of the real PDFs.")
    slice_pages: list[int] = Field(
        [4, 6, 8, 10, 13, 16, 20, 25, 32, 40],
        description="Also cut the manual into files of this many pages each (the default: 294 files, 3,424 pages).",
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunking for both paths.")


def build_corpus(config: IngestBenchConfig, folder: Path) -> int:
    """Copy the real PDFs and write the manual's slices into ``folder``; returns the file count."""
    import pypdfium2 as pdfium

    for path in sorted(Path(config.pdfs).glob("*.pdf")):
        (folder / path.name).write_bytes(path.read_bytes())
    manual = pdfium.PdfDocument(str(Path(config.pdfs) / "gnuplot.pdf"))
    for size in config.slice_pages:
        for first in range(0, len(manual), size):
            part = pdfium.PdfDocument.new()
            part.import_pages(manual, list(range(first, min(first + size, len(manual)))))
            buffer = io.BytesIO()
            part.save(buffer)
            (folder / f"gnuplot-p{first + 1:03d}-{size}pp.pdf").write_bytes(buffer.getvalue())
    return len(list(folder.iterdir()))


def run_baseline(config: IngestBenchConfig, corpus: Path, output: Path) -> dict:
    from jobs.ingest import IngestConfig, commit

    started = time.monotonic()
    run_id = new_run_id()
    ingester = FileIngester(config.chunking, 100 * 2**20, run_id)
    results = [ingester.ingest(entry, {}) for entry in storage.list_entries(str(corpus))]
    commit(IngestConfig(input=[str(corpus)], output=str(output), chunking=config.chunking), run_id, results)
    pages = sum(result.document["page_count"] for result in results if result.document)
    return figures(pages, sum(len(result.chunks) for result in results), time.monotonic() - started)


def run_ray(config: IngestBenchConfig, corpus: Path, output: Path) -> dict:
    from jobs.ingest import IngestConfig, main

    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # the job's own report line; ours is the only one on stdout
        report = main(IngestConfig(input=[str(corpus)], output=str(output), chunking=config.chunking))
    return figures(report["pages"], report["chunks"], time.monotonic() - started)


def figures(pages: int, chunks: int, seconds: float) -> dict:
    return {
        "seconds": round(seconds, 2),
        "pages": pages,
        "chunks": chunks,
        "pages_per_s": round(pages / seconds, 1),
        "chunks_per_s": round(chunks / seconds, 1),
    }


def main(config: IngestBenchConfig) -> dict:
    from rayfleet.ray_setup import init_ray

    init_ray()
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus"
        corpus.mkdir()
        files = build_corpus(config, corpus)
        baseline = run_baseline(config, corpus, Path(folder) / "baseline")
        ray_figures = run_ray(config, corpus, Path(folder) / "ray")
    assert (ray_figures["pages"], ray_figures["chunks"]) == (baseline["pages"], baseline["chunks"]), (
        "both paths did the same work"
    )
    import ray

    result = {
        "bench": "ingest",
        "files": files,
        "pages": baseline["pages"],
        "chunks": baseline["chunks"],
        "cluster_cpus": ray.cluster_resources().get("CPU", 0),
        "pages_per_s": ray_figures["pages_per_s"],
        "chunks_per_s": ray_figures["chunks_per_s"],
        "baseline_pages_per_s": baseline["pages_per_s"],
        "baseline_chunks_per_s": baseline["chunks_per_s"],
        "speedup": round(ray_figures["pages_per_s"] / baseline["pages_per_s"], 2),
        "ray": ray_figures,
        "baseline": baseline,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main(config_or_exit(IngestBenchConfig, sys.argv[1:]))
