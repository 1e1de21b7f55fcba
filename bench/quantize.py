"""Benchmark: full-precision SmolLM2 against its quantized checkpoint on the serving engine.

    python -m bench.quantize [method=w8a8_int8] [papers=8] [max_tokens=48] [engine.kind=vllm]

Quantizes the provisioned SmolLM2-135M-Instruct (fp32) with ``method`` (calibration
sample: chunks of aclsum train papers, as ``jobs.quantize`` draws it), then runs the same
held-out prompts through each model, each engine in its own fresh process: ``papers``
aclsum test papers, three questions each (what problem, what approach, what outcome),
the abstract as context and the paper's human-written summaries as reference answers
(``rayfleet.quantization.quality``). Prints one JSON line: weights size on disk, peak
resident memory of the engine process, generated tokens/s, token F1 and greedy agreement,
for both, and ``size_ratio``, ``peak_memory_ratio``, ``speed_ratio`` (quantized / full).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

from pydantic import Field

from jobs.quantize import CalibrationConfig, HeldoutConfig, calibration_for, heldout_pairs
from rayfleet.assets import SMOLLM2, resolve_model
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.quantization import QuantizationMethod, quantize_model
from rayfleet.quantization.compare import compare_models


class QuantizeBenchConfig(BaseConfig):
    """What the benchmark quantizes and how it measures."""

    model: str = Field(SMOLLM2, description="Full-precision model (provisioned name or folder).")
    method: QuantizationMethod = Field("w8a8_int8", description="Quantization method to measure.")
    papers: int = Field(8, ge=1, le=100, description="aclsum test papers in the held-out QA (3 questions each).")
    max_tokens: int = Field(48, ge=1, description="Most new tokens per answer.")
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(kind="vllm", max_model_len=1024, max_num_seqs=32, cpu_kv_cache_gib=1.0),
        description="Engine both models run on (its `model` is set per run).",
    )


def main(config: QuantizeBenchConfig) -> dict:
    full = resolve_model(config.model)
    calibration = calibration_for(config.method, CalibrationConfig(), full)  # none for w8a8_int8
    pairs, qa_source = heldout_pairs(HeldoutConfig(papers=config.papers, max_tokens=config.max_tokens))
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as scratch:
        quantized = Path(scratch) / "checkpoint"
        quantize_model(full, quantized, config.method, calibration)
        figures = compare_models(full, quantized, pairs, config.engine, SamplingConfig(max_tokens=config.max_tokens))
    result = {"method": config.method, "model": config.model, "heldout_qa": qa_source, **figures}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(config_or_exit(QuantizeBenchConfig, sys.argv[1:]))
