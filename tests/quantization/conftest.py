"""Fixtures of the quantization tests: real W8A8 checkpoints (SmolLM2, tiny Llama) and a real trained LoRA adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayfleet.quantization import calibration_sample, quantize_model
from rayfleet.quantization.quality import QaPair, qa_pairs_from_papers


@pytest.fixture(scope="session")
def heldout_pairs() -> list[QaPair]:
    """Six held-out QA pairs on two real aclsum test papers (abstract as context, human answers)."""
    from jobs.demo_documents import DemoDocumentsConfig, build_documents

    papers = build_documents(DemoDocumentsConfig(output="unused", count=2, split="test", content="abstract"))
    return qa_pairs_from_papers(papers.to_pylist())


@pytest.fixture(scope="session")
def smollm2_w8a8(tmp_path_factory, smollm2_path) -> Path:
    """SmolLM2-135M-Instruct quantized with w8a8_int8 (about 15 s)."""
    folder = tmp_path_factory.mktemp("smollm2-w8a8")
    sample = calibration_sample(["calibration text one", "calibration text two"], 2, 0, "test strings")
    quantize_model(smollm2_path, folder, "w8a8_int8", sample)
    return folder


@pytest.fixture(scope="session")
def tiny_w8a8(tmp_path_factory, tiny_llama_path) -> Path:
    """The tiny random Llama quantized with w8a8_int8 (a second or two)."""
    folder = tmp_path_factory.mktemp("tiny-w8a8") / "checkpoint"
    quantize_model(tiny_llama_path, folder, "w8a8_int8")
    return folder


@pytest.fixture(scope="session")
def smollm2_lora_adapter(tmp_path_factory, smollm2_path, heldout_pairs) -> Path:
    """A real peft LoRA adapter trained for a few steps on SmolLM2 (fp32) with QA chats from train papers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.demo_documents import DemoDocumentsConfig, build_documents

    papers = build_documents(DemoDocumentsConfig(output="unused", count=2, split="train", content="abstract"))
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    chats = [
        pair.conversation() + [{"role": "assistant", "content": pair.answer}]
        for pair in qa_pairs_from_papers(papers.to_pylist())
    ]
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], lora_dropout=0.0),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    model.train()
    for chat in chats:
        ids = torch.tensor([tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("smollm2-lora")
    model.save_pretrained(folder)
    return folder
