"""A LoRA adapter trained on the fp32 base, on the W8A8 checkpoint: checked, recorded, refused where it cannot serve."""

from __future__ import annotations

import pytest
import torch

from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.quantization.lora import (
    IncompatibleAdapterError,
    LoraCheckConfig,
    check_lora_compatibility,
    int8_weights_fit_amx_kernel,
    require_lora_capable_engine,
    vllm_lora_problem,
)
from rayfleet.quantization.measure import EngineRunError, measure_generation


def test_an_engine_with_lora_on_an_int8_checkpoint_on_a_cpu_without_amx_is_refused_with_the_remedy(
    tiny_w8a8, tiny_llama_path, smollm2_w8a8
):
    with pytest.raises(IncompatibleAdapterError, match="max_loras=4: vLLM 0.32 on a CPU without AMX") as refused:
        require_lora_capable_engine(tiny_w8a8, max_loras=4, on_gpu=False, amx=False)
    assert "Set max_loras: 0 on this engine" in str(refused.value)
    require_lora_capable_engine(tiny_w8a8, max_loras=0, on_gpu=False, amx=False)  # LoRA off: served
    require_lora_capable_engine(tiny_w8a8, max_loras=4, on_gpu=True)  # GPU kernels keep layer.weight
    require_lora_capable_engine(tiny_llama_path, max_loras=4, on_gpu=False, amx=False)  # full precision: served
    require_lora_capable_engine(smollm2_w8a8, max_loras=4, on_gpu=False, amx=True)  # the AMX kernel takes it


def test_with_amx_an_int8_weight_the_amx_kernel_does_not_take_still_refuses_lora(tmp_path, smollm2_w8a8):
    import shutil

    from safetensors.torch import load_file, save_file

    assert int8_weights_fit_amx_kernel(smollm2_w8a8)  # SmolLM2's shapes: all multiples of 16 and 32
    odd = tmp_path / "odd"
    shutil.copytree(smollm2_w8a8, odd)
    [weights_file] = odd.glob("*.safetensors")
    tensors = load_file(weights_file)
    name = next(name for name, tensor in tensors.items() if tensor.dtype == torch.int8)
    tensors[name] = tensors[name][:, :-8].contiguous()  # k no longer a multiple of 32: oneDNN's, where LoRA fails
    save_file(tensors, weights_file, metadata={"format": "pt"})
    assert not int8_weights_fit_amx_kernel(odd)
    assert vllm_lora_problem(odd, on_gpu=False, amx=True) is not None


@pytest.mark.slow
def test_vllm_on_this_cpu_applies_lora_to_the_int8_checkpoint_exactly_when_the_rule_says_it_can(
    smollm2_w8a8, smollm2_lora_adapter
):
    """Keeps the rule honest on each machine: without AMX vLLM fails (when an upgrade fixes that, this
    fails and the rule must go); with AMX it answers with the adapter."""
    config = EngineConfig(kind="vllm", model=str(smollm2_w8a8), adapter=str(smollm2_lora_adapter), max_model_len=512,
                          max_num_seqs=4, cpu_kv_cache_gib=1)  # fmt: skip
    conversations, sampling = [[{"role": "user", "content": "Hi"}]], SamplingConfig(max_tokens=4)
    if vllm_lora_problem(smollm2_w8a8, on_gpu=False) is None:
        assert measure_generation(config, conversations, sampling).generations[0].completion_tokens > 0
    else:
        with pytest.raises(EngineRunError, match="AttributeError: 'NoneType' object has no attribute 'device'"):
            measure_generation(config, conversations, sampling)


@pytest.mark.slow
def test_adapter_agrees_on_the_quantized_base_but_the_pair_is_refused_for_serving_on_a_cpu_without_amx(
    smollm2_path, smollm2_w8a8, smollm2_lora_adapter, heldout_pairs
):
    verdict = check_lora_compatibility(
        smollm2_path, smollm2_w8a8, str(smollm2_lora_adapter), heldout_pairs[:3], LoraCheckConfig(max_tokens=24),
        on_gpu=False, amx=False,
    )  # fmt: skip
    assert 0 < verdict.prefix_agreement <= 1, verdict
    assert verdict.f1_full > 0 and verdict.f1_quantized >= verdict.f1_full - 0.1, verdict
    assert verdict.serving_engine_applies_lora is False
    assert verdict.compatible is False and "vLLM 0.32 on a CPU without AMX" in verdict.reason
    assert verdict.record()["adapter"] == str(smollm2_lora_adapter)
