"""Quantizing a model for deployment, and checking what it costs in quality. Ray-free.

    sample = calibration_sample(chunk_texts, count=64, seed=0, source="s3://rayfleet/chunks")
    manifest = quantize_model(Path("base"), Path("base-w8a8"), "w8a8_int8", sample)

- :mod:`~rayfleet.quantization.methods`: the methods, where each runs, the code that runs them.
- :mod:`~rayfleet.quantization.calibration`: the calibration sample of our own chunks and its hash.
- :mod:`~rayfleet.quantization.measure`: size on disk, peak memory, tokens/s (engine in its own process).
- :mod:`~rayfleet.quantization.quality`: held-out QA, token F1, greedy agreement with the fp model.
- :mod:`~rayfleet.quantization.lora`: LoRA adapters on a quantized base, checked and refused when incompatible.

``jobs/quantize.py`` runs it all and publishes the checkpoint; ``bench/quantize.py`` measures it.
"""

from __future__ import annotations

import json
from pathlib import Path

from rayfleet.assets import folder_fingerprint
from rayfleet.quantization.calibration import CalibrationSample, calibration_sample, read_chunk_texts
from rayfleet.quantization.methods import (
    METHODS,
    QuantizationMethod,
    QuantizationUnavailableError,
    quantize_checkpoint,
    require_runnable,
)

MANIFEST_FILE = "rayfleet-quantization.json"

__all__ = [
    "METHODS",
    "MANIFEST_FILE",
    "CalibrationSample",
    "QuantizationMethod",
    "QuantizationUnavailableError",
    "calibration_sample",
    "quantize_model",
    "read_chunk_texts",
    "require_runnable",
]


def quantize_model(source: Path, output: Path, method: str, calibration: CalibrationSample) -> dict:
    """Write the quantized checkpoint of ``source`` into ``output`` with a manifest of how it was made.

    Returns:
        The manifest (also saved as ``output/rayfleet-quantization.json``): method, its
        scheme, the source model's fingerprint and the calibration sample's record.
    """
    quantize_checkpoint(source, output, method, calibration)
    spec = METHODS[method]
    manifest = {
        "method": method,
        "scheme": spec.scheme,
        "description": spec.description,
        "source_fingerprint": folder_fingerprint(source),
        "calibration": {**calibration.record(), "used_by_method": spec.needs_calibration},
    }
    (output / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest
