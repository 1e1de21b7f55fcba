"""The LoRA model: compiled layers and loss match eager ones for any packing; the GPU's cast-free adapters
match peft's."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from rayfleet.training.data import IGNORE_INDEX
from rayfleet.training.loop import loss_sum
from rayfleet.training.model import LoraSettings, add_lora, compile_model, compiles, skip_adapter_input_casts

LORA = LoraSettings(rank=4, alpha=8, dropout=0.0, compile=False)


def packed_row(lengths: list[int], seed: int) -> dict:
    """A packed row of random tokens: examples of ``lengths``, each one's first token unlabelled."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(10, 1000, (sum(lengths),), generator=generator).tolist()
    positions = [position for length in lengths for position in range(length)]
    labels = [IGNORE_INDEX if position == 0 else token for token, position in zip(input_ids, positions)]
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def lora_model(tiny_llama_path, settings: LoraSettings = LORA):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    return add_lora(base, settings, torch.device("cpu"))


def loss_and_gradients(model, row: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    total, _ = loss_sum(model, row, torch.device("cpu"))
    total.backward()
    return total.detach(), [parameter.grad.clone() for parameter in model.parameters() if parameter.requires_grad]


def test_compile_is_on_for_a_cuda_gpu_without_qlora_unless_the_config_says_otherwise():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert compiles(LoraSettings(), cuda) and not compiles(LoraSettings(), cpu)
    assert not compiles(LoraSettings(quantization="4bit"), cuda)
    assert compiles(LoraSettings(compile=True), cpu) and not compiles(LoraSettings(compile=False), cuda)


def test_compiled_layers_and_loss_give_eager_losses_and_gradients_whatever_the_packing(tiny_llama_path):
    from torch._dynamo.utils import counters

    eager, compiled = lora_model(tiny_llama_path), lora_model(tiny_llama_path)
    compile_model(compiled, backend="aot_eager")  # dynamo and autograd as on a GPU, without inductor's build time
    counters.clear()
    packings = [[12, 12, 12], [5, 20, 11], [7, 7, 9, 13], [30], [3, 17, 4, 9, 2]]
    for seed, lengths in enumerate(packings):
        row = packed_row(lengths, seed)
        (eager_loss, eager_grads), (compiled_loss, compiled_grads) = (
            loss_and_gradients(m, row) for m in (eager, compiled)
        )
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-4)
        for ours, reference in zip(compiled_grads, eager_grads):
            torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0, "the layers did run compiled"
    compiled_before = graphs
    for seed, lengths in enumerate([[6, 6, 6, 6, 6], [1, 2, 30]], start=10):
        loss_and_gradients(compiled, packed_row(lengths, seed))
    assert counters["stats"]["unique_graphs"] == compiled_before, (
        "a new packing reuses the graphs (attention is outside)"
    )


def test_adapters_without_peft_input_casts_give_the_same_output_under_bf16_autocast(tiny_llama_path):
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, compile=False)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.bfloat16)
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=settings.target_modules))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)  # B = 0 would hide the adapters
    assert any(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad), "peft keeps adapters in fp32"
    input_ids = torch.randint(10, 1000, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        casting = model(input_ids=input_ids).logits
        skip_adapter_input_casts(model)
        not_casting = model(input_ids=input_ids).logits
    torch.testing.assert_close(not_casting, casting, rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        model(input_ids=input_ids)  # without autocast the bf16 input meets the fp32 adapter


def test_target_modules_that_match_no_layer_are_refused_before_training(tiny_llama_path):
    from rayfleet.training.model import LoraSettings, check_target_modules

    check_target_modules(str(tiny_llama_path), LoraSettings())  # the Llama projections
    check_target_modules(str(tiny_llama_path), LoraSettings(target_modules=["self_attn.q_proj", "lm_head"]))
    with pytest.raises(ValueError, match=r"lora.target_modules \['attn_qkv'\] match no layer of .*'q_proj'"):
        check_target_modules(str(tiny_llama_path), LoraSettings(target_modules=["q_proj", "attn_qkv"]))
    # peft refuses these in every worker, retried: refused here, once
    with pytest.raises(
        ValueError, match=r"\['input_layernorm', 'rotary_emb'\] name layers LoRA cannot adapt.*'v_proj'"
    ):
        check_target_modules(
            str(tiny_llama_path), LoraSettings(target_modules=["q_proj", "input_layernorm", "rotary_emb"])
        )
    with pytest.raises(ValueError, match="at least 1 item"):
        LoraSettings(target_modules=[])
