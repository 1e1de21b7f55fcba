"""The quantization job end to end: SmolLM2 -> W8A8, served by vLLM, published to a registry in real S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jobs.quantize import QuantizeConfig, main
from rayfleet.assets import resolve_model
from rayfleet.config import load_config
from rayfleet.registry import Registry

REPO = Path(__file__).resolve().parents[2]
CPU_PRESET = REPO / "jobs" / "configs" / "quantize" / "smollm2_w8a8_cpu.yaml"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the method may be runnable")
def test_gpu_method_stops_at_once_on_cpu_and_says_what_it_needs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.quantize", "method=w4a16_gptq", f"registry={tmp_path / 'registry'}"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "QuantizationUnavailableError: method=w4a16_gptq needs an NVIDIA GPU" in result.stderr
    assert "loading" not in result.stderr.lower()  # refused before any model was read
    assert not (tmp_path / "registry").exists()


@pytest.mark.slow
def test_quantize_verify_and_publish_to_s3_registry(s3_prefix):
    registry_root = f"{s3_prefix}/registry"
    config = load_config(QuantizeConfig, [
        f"config={CPU_PRESET}", f"registry={registry_root}", "calibration.papers=4", "calibration.samples=16",
        "heldout.papers=1", "heldout.max_tokens=24",
    ])  # fmt: skip
    report = main(config)

    assert report["published"] == f"{registry_root}/models/smollm2-135m-instruct-w8a8-int8@1"
    assert report["size_ratio"] < 0.45
    assert report["f1_full"] > 0 and report["f1_quantized"] >= report["f1_full"] - 0.1, report
    assert 0 <= report["prefix_agreement"] <= 1 and report["completion_tokens_quantized"] > 0
    artifact = Registry(registry_root, kind="models").resolve("smollm2-135m-instruct-w8a8-int8@latest")
    metadata = artifact.metadata
    assert metadata["method"] == "w8a8_int8"
    assert metadata["calibration_sha256"] == report["calibration_sha256"]
    assert metadata["quantization"]["calibration"]["source"] == "aclsum:train[:4] chunks of 256 tokens"
    assert metadata["metrics"]["engine"] == "vllm" and metadata["source"]["model"] == "smollm2-135m-instruct"

    served = resolve_model(report["published"])  # what engine.model=<reference> loads
    quantization = json.loads((served / "config.json").read_text())["quantization_config"]
    assert quantization["format"] == "int-quantized"


def test_registry_reference_as_source_needs_a_registry():
    with pytest.raises(ValueError, match="registry reference: set registry="):
        main(load_config(QuantizeConfig, ["model=acme-merged@3", "method=w8a8_int8"]))
