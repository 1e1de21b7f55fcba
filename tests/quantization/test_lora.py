"""A LoRA adapter trained on the fp32 base, on the W8A8 checkpoint: checked, recorded, refused where it cannot serve."""

from __future__ import annotations

import pytest

from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.quantization.lora import (
    IncompatibleAdapterError,
    LoraCheckConfig,
    check_lora_compatibility,
    require_lora_capable_engine,
    require_servable_pair,
)
from rayfleet.quantization.measure import EngineRunError, measure_generation


def test_adapter_on_int8_base_is_refused_for_vllm_on_cpu(smollm2_w8a8, smollm2_path):
    with pytest.raises(IncompatibleAdapterError, match="vLLM 0.32 on CPU cannot apply LoRA to an int8") as refused:
        require_servable_pair(smollm2_w8a8, "acme-qa@3", engine_kind="vllm", on_gpu=False)
    assert "merge it into the base" in str(refused.value)
    require_servable_pair(smollm2_path, "acme-qa@3", engine_kind="vllm", on_gpu=False)  # fp base: served
    require_servable_pair(smollm2_w8a8, None, engine_kind="vllm", on_gpu=False)  # no adapter: served


def test_an_engine_with_lora_on_an_int8_checkpoint_on_cpu_is_refused_with_the_remedy(tiny_w8a8, tiny_llama_path):
    with pytest.raises(IncompatibleAdapterError, match="max_loras=4: vLLM 0.32 on CPU cannot apply LoRA") as refused:
        require_lora_capable_engine(tiny_w8a8, max_loras=4, on_gpu=False)
    assert "Set max_loras: 0 on this engine" in str(refused.value)
    require_lora_capable_engine(tiny_w8a8, max_loras=0, on_gpu=False)  # LoRA off: served
    require_lora_capable_engine(tiny_w8a8, max_loras=4, on_gpu=True)  # GPU kernels keep layer.weight
    require_lora_capable_engine(tiny_llama_path, max_loras=4, on_gpu=False)  # full precision: served


@pytest.mark.slow
def test_vllm_on_cpu_really_cannot_apply_lora_to_the_int8_checkpoint(smollm2_w8a8, smollm2_lora_adapter):
    """Keeps the refusal honest: when a vLLM upgrade fixes this, this test fails and the rule must go."""
    config = EngineConfig(kind="vllm", model=str(smollm2_w8a8), adapter=str(smollm2_lora_adapter), max_model_len=512,
                          max_num_seqs=4, cpu_kv_cache_gib=1)  # fmt: skip
    with pytest.raises(EngineRunError, match="AttributeError: 'NoneType' object has no attribute 'device'"):
        measure_generation(config, [[{"role": "user", "content": "Hi"}]], SamplingConfig(max_tokens=4))


@pytest.mark.slow
def test_adapter_agrees_on_the_quantized_base_but_the_pair_is_refused_for_serving(
    smollm2_path, smollm2_w8a8, smollm2_lora_adapter, heldout_pairs
):
    verdict = check_lora_compatibility(
        smollm2_path, smollm2_w8a8, str(smollm2_lora_adapter), heldout_pairs[:3], LoraCheckConfig(max_tokens=24),
        on_gpu=False,
    )  # fmt: skip
    assert 0 < verdict.prefix_agreement <= 1, verdict
    assert verdict.f1_full > 0 and verdict.f1_quantized >= verdict.f1_full - 0.1, verdict
    assert verdict.serving_engine_applies_lora is False
    assert verdict.compatible is False and "vLLM 0.32 on CPU" in verdict.reason
    assert verdict.record()["adapter"] == str(smollm2_lora_adapter)
