"""Gap-sampled LoRA dropout: the Bernoulli(p) distribution, the same mask in backward, swapped in on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rayfleet.training.dropout import GapSampledDropout, dropped_positions, use_gap_sampled_dropout
from rayfleet.training.model import LoraSettings, build_lora_model


def within_sigmas(observed: float, n: int, p: float, sigmas: float = 6.0) -> bool:
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_positions_are_a_bernoulli_sample_over_the_whole_range(p):
    torch.manual_seed(0)
    n = 400_000
    positions = dropped_positions(n, p)
    assert positions.dtype == torch.long and bool((positions[1:] > positions[:-1]).all()), "increasing, no repeats"
    assert int(positions[0]) >= 0 and int(positions[-1]) < n
    assert within_sigmas(len(positions), n, p), f"{len(positions)} dropped of {n}"
    tail = int((positions >= n - n // 10).sum())
    assert within_sigmas(tail, n // 10, p), "the last tenth is covered like the rest"
    gaps = torch.diff(positions)
    assert within_sigmas(int((gaps == 1).sum()), len(gaps), p), "gaps are Geometric(p): P(gap = 1) = p"
    assert within_sigmas(int((gaps == 2).sum()), len(gaps), p * (1 - p))


def test_no_positions_without_dropout_and_every_position_at_p_one():
    assert len(dropped_positions(1000, 0.0)) == 0
    assert dropped_positions(5, 1.0).tolist() == [0, 1, 2, 3, 4]


def test_forward_zeroes_p_and_rescales_the_rest_and_backward_uses_the_same_mask():
    torch.manual_seed(1)
    dropout = GapSampledDropout(0.1).train()
    x = (torch.rand(300, 700) + 0.5).requires_grad_()
    y = dropout(x)
    dropped = y == 0
    assert within_sigmas(int(dropped.sum()), x.numel(), 0.1)
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.9)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad == 0, dropped), "the gradient is zero exactly where the output was"
    torch.testing.assert_close(x.grad[~dropped], torch.full_like(x.grad[~dropped], 1 / 0.9))


def test_masks_differ_between_calls_and_follow_the_seed():
    dropout = GapSampledDropout(0.2).train()
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(3)
    assert not torch.equal(first, second) and torch.equal(dropout(x), first)


def test_eval_mode_and_zero_probability_pass_the_input_through():
    x = torch.randn(8, 8)
    assert GapSampledDropout(0.5).eval()(x) is x
    assert GapSampledDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        GapSampledDropout(1.0)


def test_cpu_lora_models_get_it_on_every_adapted_layer(tiny_llama_path):
    settings = LoraSettings(rank=4, dropout=0.05, target_modules=["q_proj", "v_proj", "down_proj"])
    model = build_lora_model(str(tiny_llama_path), settings, torch.device("cpu"))
    dropouts = [module for name, module in model.named_modules() if ".lora_dropout." in name]
    assert len(dropouts) == 3 * 2, "three adapted projections in each of the tiny model's two layers"
    assert all(isinstance(module, GapSampledDropout) and module.p == 0.05 for module in dropouts)
    assert use_gap_sampled_dropout(model) == 0, "nothing left to replace"
    assert not any(type(module) is nn.Dropout for name, module in model.named_modules() if "lora" in name)
