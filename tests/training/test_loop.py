"""The Ray-free loop: warmup schedule, loss falls, shared prefixes change nothing, checkpoints resume exactly,
QLoRA refused on CPU."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from rayfleet.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from rayfleet.training.data import pack_examples, prepare_examples
from rayfleet.training.loop import (
    TrainSettings,
    learning_rate_factor,
    loss_sum,
    make_optimizer,
    make_scheduler,
    schedule_warning,
    train,
)
from rayfleet.training.model import LoraSettings, QuantizationUnavailableError, build_lora_model

FACTS = [("Which valve leaks?", "Valve 7 on the north pump."), ("Who checks the valves?", "The night shift, weekly."),
         ("Where is the spare filter?", "In locker B12."),
         ("What torque for the flange?", "Forty newton metres.")]  # fmt: skip
LORA = LoraSettings(rank=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])


def rows_of(tokenizer, facts, pack_length=64, share_prefix=True):
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in facts]
    examples, _ = prepare_examples([{"messages": c, "doc_id": "d"} for c in conversations], tokenizer, 256, "fail")
    return pack_examples(examples, pack_length, share_prefix=share_prefix)


def fresh(model_path, settings):
    torch.manual_seed(0)
    model = build_lora_model(str(model_path), LORA, torch.device("cpu"))
    optimizer = make_optimizer(model, settings)
    return model, optimizer, make_scheduler(optimizer, settings)


def epochs_over(rows):
    return lambda epoch, skip: rows[skip:]


def test_warmup_then_cosine_decay():
    settings = TrainSettings(max_steps=10, warmup_steps=4, schedule="cosine")
    factors = [learning_rate_factor(step, settings) for step in range(10)]
    assert factors[:4] == [0.2, 0.4, 0.6, 0.8] and factors[4] == 1.0
    assert all(a > b for a, b in zip(factors[4:], factors[5:])) and factors[-1] > 0


def test_a_warmup_as_long_as_the_run_is_warned_of_with_the_rate_it_reaches():
    assert schedule_warning(TrainSettings(max_steps=10, warmup_steps=9)) is None
    warning = schedule_warning(TrainSettings(max_steps=4, warmup_steps=9, learning_rate=1e-3))
    assert "warmup_steps 9 is not below train.max_steps 4" in warning
    assert "0.0004" in warning  # step 3 of a 9-step warmup: 4/10 of the peak


def test_training_loss_falls_and_validation_is_recorded(tiny_llama_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    rows = rows_of(tokenizer, FACTS)
    settings = TrainSettings(max_steps=12, learning_rate=3e-2, warmup_steps=1, eval_every=6, schedule="constant")
    model, optimizer, scheduler = fresh(tiny_llama_path, settings)
    state = train(model, optimizer, scheduler, epochs_over(rows), rows, settings, TrainState())
    assert state.step == 12 and state.epoch > 0, "more steps than rows: it ran over several epochs"
    assert state.train_losses["12"] < state.train_losses["1"] - 0.1, "a random tiny model learns slowly, but it learns"
    assert set(state.validation_losses) == {"0", "6", "12"}
    assert state.validation_losses["12"] < state.validation_losses["0"]


def test_without_validation_rows_the_validation_loss_is_none_not_nan(tiny_llama_path):
    import json

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    settings = TrainSettings(max_steps=2, warmup_steps=0, eval_every=1)
    model, optimizer, scheduler = fresh(tiny_llama_path, settings)
    state = train(model, optimizer, scheduler, epochs_over(rows_of(tokenizer, FACTS)), [], settings, TrainState())
    assert state.validation_losses == {"0": None, "1": None, "2": None}
    json.dumps(state.validation_losses, allow_nan=False)  # the adapter's metadata stays valid JSON


def test_a_shared_prefix_row_gives_the_loss_and_gradients_of_its_examples_alone(tiny_llama_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    [shared] = rows_of(tokenizer, FACTS, pack_length=512)
    alone = [row for fact in FACTS for row in rows_of(tokenizer, [fact])]  # one example per row
    assert len(alone) == len(FACTS) and len(shared["input_ids"]) < sum(len(row["input_ids"]) for row in alone)
    model, _, _ = fresh(tiny_llama_path, TrainSettings())
    for parameter in model.parameters():  # B = 0 at the start would hide the adapters' effect on the gradients
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter, std=0.05)

    def loss_and_gradients(rows):
        model.zero_grad()
        total, count = 0.0, 0
        for row in rows:
            row_loss, row_count = loss_sum(model, row, torch.device("cpu"))
            row_loss.backward()
            total, count = total + row_loss.item(), count + row_count
        return total, count, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    shared_loss, shared_count, shared_grads = loss_and_gradients([shared])
    alone_loss, alone_count, alone_grads = loss_and_gradients(alone)
    assert shared_count == alone_count
    assert shared_loss == pytest.approx(alone_loss, rel=1e-5)
    for ours, reference in zip(shared_grads, alone_grads):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_resuming_from_a_checkpoint_gives_the_same_weights_as_an_unbroken_run(tiny_llama_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    rows = rows_of(tokenizer, FACTS * 2, pack_length=48)
    settings = TrainSettings(
        max_steps=6, learning_rate=3e-3, warmup_steps=2, gradient_accumulation_steps=2, eval_every=100
    )
    model, optimizer, scheduler = fresh(tiny_llama_path, settings)
    unbroken = train(model, optimizer, scheduler, epochs_over(rows), [], settings, TrainState())
    expected = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    half = settings.model_copy(update={"max_steps": 3})
    model, optimizer, scheduler = fresh(tiny_llama_path, settings)
    first = train(model, optimizer, scheduler, epochs_over(rows), [], half, TrainState())
    save_checkpoint(str(tmp_path), model, optimizer, scheduler, first)
    model, optimizer, scheduler = fresh(tiny_llama_path, settings)
    restored = load_checkpoint(str(tmp_path), model, optimizer, scheduler)
    assert (restored.step, restored.epoch, restored.rows_in_epoch) == (first.step, first.epoch, first.rows_in_epoch)
    resumed = train(model, optimizer, scheduler, epochs_over(rows), [], settings, restored)

    assert resumed.step == unbroken.step == 6 and resumed.tokens_trained == unbroken.tokens_trained
    assert (resumed.epoch, resumed.rows_in_epoch) == (unbroken.epoch, unbroken.rows_in_epoch), "same data position"
    assert scheduler.last_epoch == 6 and all(s["step"] == 6 for s in optimizer.state_dict()["state"].values())
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter, expected[name], atol=1e-6, rtol=1e-5)


def test_qlora_on_cpu_fails_at_once_with_a_clear_message(tiny_llama_path):
    with pytest.raises(QuantizationUnavailableError, match="needs a CUDA GPU"):
        build_lora_model(str(tiny_llama_path), LoraSettings(quantization="4bit"), torch.device("cpu"))
