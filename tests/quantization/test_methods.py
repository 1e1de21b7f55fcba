"""Real quantization of SmolLM2 and the tiny Llama: the checkpoint's format, size, weights and dtypes, and the GPU
method's refusal here."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from rayfleet.quantization import MANIFEST_FILE, QuantizationUnavailableError, quantize_model, require_runnable
from rayfleet.quantization.measure import weights_size_bytes


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the method may be runnable")
def test_gpu_method_is_refused_on_cpu_with_what_it_needs():
    with pytest.raises(QuantizationUnavailableError) as refused:
        require_runnable("w4a16_gptq")
    message = str(refused.value)
    assert "method=w4a16_gptq needs an NVIDIA GPU" in message
    assert "use method=w8a8_int8" in message


def test_cpu_method_is_runnable_here():
    assert require_runnable("w8a8_int8").needs_gpu is False


def test_w8a8_checkpoint_is_compressed_tensors_int8_and_smaller(smollm2_w8a8, smollm2_path):
    quantization = json.loads((smollm2_w8a8 / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "compressed-tensors"
    assert quantization["format"] == "int-quantized"
    assert quantization["ignore"] == ["lm_head"]
    assert weights_size_bytes(smollm2_w8a8) < 0.45 * weights_size_bytes(smollm2_path)
    manifest = json.loads((smollm2_w8a8 / MANIFEST_FILE).read_text())
    assert manifest["method"] == "w8a8_int8" and len(manifest["calibration"]["sha256"]) == 64


def test_w8a8_weights_are_the_fp32_weights_rounded_per_channel(smollm2_w8a8, smollm2_path):
    name = "model.layers.3.mlp.down_proj"
    with (
        safe_open(smollm2_w8a8 / "model.safetensors", "pt") as quantized,
        safe_open(smollm2_path / "model.safetensors", "pt") as full,
    ):
        weight_int8 = quantized.get_tensor(f"{name}.weight")
        scale = quantized.get_tensor(f"{name}.weight_scale")
        original = full.get_tensor(f"{name}.weight")
    assert weight_int8.dtype == torch.int8 and scale.shape == (original.shape[0], 1)
    error = (weight_int8.float() * scale - original).abs()
    assert bool((error <= scale / 2 + 1e-7).all())  # round to nearest: at most half a step per channel
    assert weight_int8.float().abs().amax(dim=1).min() >= 127  # each channel's largest weight uses the full range


def test_a_bf16_source_keeps_bf16_where_it_is_not_quantized_and_comes_out_smaller(tmp_path, tiny_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.bfloat16).save_pretrained(source)
    AutoTokenizer.from_pretrained(tiny_llama_path).save_pretrained(source)
    output = tmp_path / "bf16-w8a8"
    quantize_model(source, output, "w8a8_int8")

    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(output / "model.safetensors", "pt") as quantized:
        assert quantized.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
        assert quantized.get_tensor("lm_head.weight").dtype == torch.bfloat16
        assert quantized.get_tensor("model.norm.weight").dtype == torch.bfloat16
        assert quantized.get_tensor("model.layers.0.mlp.up_proj.weight").dtype == torch.int8
        assert quantized.get_tensor("model.layers.0.mlp.up_proj.weight_scale").dtype == torch.float32
    assert weights_size_bytes(output) < weights_size_bytes(source)


def test_an_fp32_source_stays_fp32(smollm2_w8a8):
    assert json.loads((smollm2_w8a8 / "config.json").read_text())["dtype"] == "float32"
