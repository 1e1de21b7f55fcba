"""Quantizing a model for deployment, and checking what it costs in quality. Ray-free.

    manifest = quantize_model(Path("base"), Path("base-w8a8"), "w8a8_int8")  # needs no calibration data
    sample = calibration_sample(chunk_texts, count=64, seed=0, source="s3://rayfleet/chunks")
    manifest = quantize_model(Path("base"), Path("base-w4a16"), "w4a16_gptq", sample)

- :mod:`~rayfleet.quantization.methods`: the methods, where each runs, the code that runs them.
- :mod:`~rayfleet.quantization.calibration`: the calibration sample of our own chunks and its hash.
- :mod:`~rayfleet.quantization.measure`: size on disk, peak memory, tokens/s (engine in its own process).
- :mod:`~rayfleet.quantization.quality`: held-out QA, token F1, greedy agreement with the fp model.
- :mod:`~rayfleet.quantization.lora`: LoRA adapters on a quantized base, checked and refused when incompatible.
- :mod:`~rayfleet.quantization.folders`: the output folder's checks and staging, and the refusal of quantized sources.

``jobs/quantize.py`` runs it all and publishes the checkpoint; ``bench/quantize.py`` measures it.
"""

from __future__ import annotations

import json
from pathlib import Path

from rayfleet.assets import folder_fingerprint
from rayfleet.quantization.calibration import CalibrationSample, calibration_sample, read_chunk_texts
from rayfleet.quantization.folders import (
    AlreadyQuantizedError,
    OutputFolderError,
    check_output_folder,
    require_unquantized_source,
    staged_folder,
)
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
    "AlreadyQuantizedError",
    "OutputFolderError",
    "CalibrationSample",
    "QuantizationMethod",
    "QuantizationUnavailableError",
    "calibration_sample",
    "quantize_model",
    "read_chunk_texts",
    "require_runnable",
]


def quantize_model(
    source: Path, output: Path, method: str, calibration: CalibrationSample | None = None, overwrite: bool = False
) -> dict:
    """Write the quantized checkpoint of ``source`` into ``output`` with a manifest of how it was made.

    The checkpoint is written into a staging folder and moved into place when complete; the
    source's fingerprint is taken before anything is written.

    Args:
        source: full-precision HF model folder.
        output: new or empty folder for the checkpoint (not the source, not inside it, not holding it).
        method: one of :data:`METHODS`.
        calibration: the calibration sample; required only by methods that calibrate.
        overwrite: replace a non-empty ``output``.

    Returns:
        The manifest (also saved as ``output/rayfleet-quantization.json``): method, its
        scheme, the source model's fingerprint and the calibration sample's record.

    Raises:
        OutputFolderError: ``output`` is the source, overlaps it, or is not empty without ``overwrite``.
        AlreadyQuantizedError: ``source`` is already a quantized checkpoint.
        ValueError: the method calibrates and no sample was given.
    """
    check_output_folder(source, output, overwrite)
    require_unquantized_source(source)
    spec = require_runnable(method)
    if spec.needs_calibration and calibration is None:
        raise ValueError(f"method={method} calibrates: pass a calibration sample")
    manifest = {
        "method": method,
        "scheme": spec.scheme,
        "description": spec.description,
        "source_fingerprint": folder_fingerprint(source),
        "calibration": calibration_record(calibration, spec.needs_calibration),
    }
    with staged_folder(output) as staging:
        quantize_checkpoint(source, staging, method, calibration)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def calibration_record(calibration: CalibrationSample | None, used_by_method: bool) -> dict:
    """What the manifest says about the calibration data (none drawn for a method that needs none)."""
    if calibration is None:
        return {"source": None, "sha256": None, "samples": 0, "used_by_method": used_by_method}
    return {**calibration.record(), "used_by_method": used_by_method}
