"""bench.finetune_gpu: its FLOP count, equal work on both sides, and a whole run on the CPU with a tiny shape."""

from __future__ import annotations

import torch

from bench.finetune_gpu import FinetuneGpuBenchConfig, flops_per_token, main, packed_rows, random_llama
from rayfleet.training.data import IGNORE_INDEX

TINY = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False}  # fmt: skip


def test_flops_count_frozen_matrices_twice_over_adapters_and_causal_attention():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        random_llama(TINY, torch.device("meta")), LoraConfig(r=4, target_modules=["q_proj", "down_proj"])
    )
    hidden, kv, mlp, layers, vocab = 64, 2 * 16, 96, 2, 500
    frozen = layers * (hidden * hidden * 2 + hidden * kv * 2 + 3 * hidden * mlp) + vocab * hidden
    adapters = layers * (4 * (hidden + hidden) + 4 * (mlp + hidden))
    attention = 3 * 2 * 2 * (128 + 1) / 2 * hidden * layers
    flops = flops_per_token(model, seq_len=128)
    assert (flops["frozen_matmul_params"], flops["adapter_params"]) == (frozen, adapters)
    assert flops["lora"] == 4 * frozen + 6 * adapters + attention
    assert flops["six_n"] == 6 * (frozen + adapters) + attention


def test_our_packed_rows_label_as_many_tokens_as_hf_shifted_labels():
    batch = torch.randint(0, 500, (1, 3, 10))
    (row,) = packed_rows(batch)
    assert row["input_ids"] == batch[0].flatten().tolist()
    assert row["position_ids"] == list(range(10)) * 3
    assert sum(label != IGNORE_INDEX for label in row["labels"]) == 3 * (10 - 1), "HF predicts seq_len - 1 per sequence"
    assert [row["labels"][i] for i in (0, 10, 20)] == [IGNORE_INDEX] * 3


def test_a_run_on_the_cpu_reports_every_variant_and_their_ratio():
    config = FinetuneGpuBenchConfig(steps=2, warmup=1, batch=2, seq_len=32, shape=TINY)
    line = main(config, torch.device("cpu"))
    for name in ("hf_peft", "ours_eager", "ours"):
        figures = line[name]
        assert "error" not in figures, figures
        assert figures["tokens_per_s"] > 0 and figures["last_loss"] > 0
        step_tokens = figures["tokens_per_s"] * figures["step_ms"] / 1e3
        assert abs(step_tokens - 2 * 32) < 0.05 * 2 * 32, "tokens/s is the step's tokens over its time (both rounded)"
    assert line["ours_vs_hf_peft"] == round(line["ours"]["tokens_per_s"] / line["hf_peft"]["tokens_per_s"], 2)
    assert line["device"] == "cpu" and line["measured_matmul_tflops"] is None
