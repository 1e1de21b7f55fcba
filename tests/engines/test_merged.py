"""Adapters merged into the weights answer like the adapter applied by peft, and are made once."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from rayfleet.engines import EngineConfig, SamplingConfig, create_engine
from rayfleet.engines.merged import merged_model

PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "What is two plus two?"}]]


def random_adapter(model_path, folder, seed: int) -> str:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder)  # B != 0: the adapter changes the answers
    return str(folder)


def test_a_merged_adapter_answers_like_the_applied_one_and_is_made_once(tiny_llama_path, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLEET_CACHE_DIR", str(tmp_path / "cache"))
    adapter = random_adapter(tiny_llama_path, tmp_path / "adapter", seed=1)
    sampling = SamplingConfig(max_tokens=8, repetition_penalty=1.0)
    config = EngineConfig(kind="transformers", model=str(tiny_llama_path), adapter=adapter)

    applied = [g.token_ids for g in create_engine(config).generate(PROMPTS, sampling)]
    merged = [
        g.token_ids
        for g in create_engine(config.model_copy(update={"merge_adapter": True})).generate(PROMPTS, sampling)
    ]
    base = [g.token_ids for g in create_engine(config.model_copy(update={"adapter": None})).generate(PROMPTS, sampling)]
    assert merged == applied and merged != base

    folder = merged_model(str(tiny_llama_path), adapter)
    assert folder.startswith(str(tmp_path / "cache" / "merged"))
    made = (tmp_path / "cache" / "merged").iterdir().__next__().stat().st_mtime_ns
    assert merged_model(str(tiny_llama_path), adapter) == folder  # reused, not merged again
    assert next((tmp_path / "cache" / "merged").iterdir()).stat().st_mtime_ns == made
    other = random_adapter(tiny_llama_path, tmp_path / "other", seed=2)
    assert merged_model(str(tiny_llama_path), other) != folder
