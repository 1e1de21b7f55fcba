"""The calibration sample: a deterministic draw of our own chunk texts, identified by a hash.

The same chunks, count and seed always give the same sample and the same ``sha256``,
which is recorded with every quantized checkpoint (also for methods that need no data,
so two checkpoints can be compared on what they saw).

    sample = calibration_sample(read_chunk_texts("s3://rayfleet/ingested/chunks"), count=64, seed=0)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from rayfleet import storage
from rayfleet.config import InputError
from rayfleet.tables import read_table


@dataclass(frozen=True)
class CalibrationSample:
    """The texts a quantizer calibrates on, where they came from, and their hash."""

    texts: tuple[str, ...]
    source: str
    sha256: str
    max_tokens: int

    def record(self) -> dict:
        """What is stored with a checkpoint about its calibration data."""
        return {"source": self.source, "sha256": self.sha256, "samples": len(self.texts), "max_tokens": self.max_tokens}


def texts_sha256(texts: Sequence[str]) -> str:
    """Hex sha256 of texts in order (each length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


def calibration_sample(
    texts: Sequence[str], count: int, seed: int, source: str, max_tokens: int = 512
) -> CalibrationSample:
    """``count`` distinct non-empty texts chosen by a seeded hash order (independent of input order).

    Raises:
        InputError: fewer than ``count`` usable texts.
    """
    usable = sorted({text.strip() for text in texts if text and text.strip()})
    if len(usable) < count:
        raise InputError(f"calibration needs {count} non-empty chunk texts, {source} has {len(usable)}")
    ranked = sorted(usable, key=lambda text: hashlib.sha256(f"{seed}\x00{text}".encode()).hexdigest())
    chosen = tuple(ranked[:count])
    return CalibrationSample(texts=chosen, source=source, sha256=texts_sha256(chosen), max_tokens=max_tokens)


def read_chunk_texts(chunks_uri: str) -> list[str]:
    """The ``text`` column of a chunks table (one Parquet file or a folder of them, local or S3)."""
    files = storage.list_parquet_files(chunks_uri)
    return [text for uri in files for text in read_table(uri, ["text"]).column("text").to_pylist()]
