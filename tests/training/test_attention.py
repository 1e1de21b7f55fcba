"""segment_sdpa: the same logits and gradients as sdpa's block-diagonal mask; padding masks and caches fall back.

Rows of examples of one length take one batched call; boundaries given as ``segment_bounds``
(the loop's way) give what ``position_ids`` give. Rows holding a shared prefix once give each
example the attention it gets with the prefix in front of it, whatever mix of lengths they hold.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from rayfleet.training.attention import SEGMENT_SDPA, length_groups, row_attention, segment_bounds


def test_examples_start_wherever_the_position_does_not_go_up_by_one():
    assert segment_bounds(torch.tensor([0, 1, 2, 0, 1, 0, 1, 2, 3])).tolist() == [0, 3, 5, 9]
    assert segment_bounds(torch.tensor([5, 6, 7, 0, 1])).tolist() == [0, 3, 5]
    assert segment_bounds(torch.tensor([0, 1, 2, 3])).tolist() == [0, 4]
    assert segment_bounds(torch.tensor([0, 0, 0])).tolist() == [0, 1, 2, 3], "one-token examples"
    assert segment_bounds([0, 1, 2, 0, 1]).tolist() == [0, 3, 5], "a list works too, and the result is on the CPU"


@pytest.fixture(scope="module")
def models(tiny_llama_path):
    def load(implementation):
        return AutoModelForCausalLM.from_pretrained(
            tiny_llama_path, dtype=torch.float32, attn_implementation=implementation
        )

    return load("sdpa"), load(SEGMENT_SDPA)


def packed_batch(lengths_per_row: list[list[int]]):
    generator = torch.Generator().manual_seed(0)
    width = sum(lengths_per_row[0])
    assert all(sum(lengths) == width for lengths in lengths_per_row)
    input_ids = torch.randint(10, 1000, (len(lengths_per_row), width), generator=generator)
    position_ids = torch.tensor([[p for length in lengths for p in range(length)] for lengths in lengths_per_row])
    return input_ids, position_ids


def test_packed_rows_give_the_same_logits_and_gradients_as_the_block_diagonal_mask(models):
    input_ids, position_ids = packed_batch([[5, 9, 1, 7], [22]])
    results = []
    for model in models:
        model.zero_grad()
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        logits.logsumexp(-1).sum().backward()
        results.append((logits.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    (reference, reference_grad), (ours, our_grad) = results
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_grad, reference_grad, atol=1e-5, rtol=1e-4)
    attends_across = models[1](input_ids=input_ids, position_ids=torch.arange(22).repeat(2, 1), use_cache=False).logits
    assert not torch.allclose(attends_across[0, 5:], ours[0, 5:], atol=1e-3), "the split is what makes them equal"


def test_a_padding_mask_and_cached_generation_take_sdpa_with_its_mask(models):
    input_ids = torch.randint(10, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :4] = 0  # left padding
    reference, ours = (model(input_ids=input_ids, attention_mask=attention_mask).logits for model in models)
    torch.testing.assert_close(ours[attention_mask.bool()], reference[attention_mask.bool()], atol=1e-5, rtol=1e-5)
    generated = [model.generate(input_ids[:1], max_new_tokens=6, do_sample=False) for model in models]
    assert torch.equal(generated[0], generated[1])


def forward_and_gradient(model, input_ids, position_ids, **kwargs):
    model.zero_grad()
    logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False, **kwargs).logits
    logits.logsumexp(-1).sum().backward()
    return logits.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()


@pytest.mark.parametrize("lengths", [[6, 6, 6, 6], [4, 9, 4, 7]], ids=["one-length-batched", "mixed-lengths"])
def test_boundaries_given_by_the_loop_match_the_mask(models, lengths):
    input_ids, position_ids = packed_batch([lengths])
    reference, ours = models
    reference_logits, reference_grad = forward_and_gradient(reference, input_ids, position_ids)
    logits, grad = forward_and_gradient(ours, input_ids, position_ids, segment_bounds=segment_bounds(position_ids[0]))
    torch.testing.assert_close(logits, reference_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, reference_grad, atol=1e-5, rtol=1e-4)
    one_example = segment_bounds(torch.arange(len(position_ids[0])))
    attends_across = ours(
        input_ids=input_ids, position_ids=position_ids, use_cache=False, segment_bounds=one_example
    ).logits
    assert not torch.allclose(attends_across[0, 6:], logits[0, 6:], atol=1e-3), (
        "the bounds, not the positions, split the row"
    )


def test_boundaries_describe_one_row_only(models):
    input_ids, position_ids = packed_batch([[3, 5], [8]])
    with pytest.raises(ValueError, match="one row"):
        models[1](
            input_ids=input_ids,
            position_ids=position_ids,
            use_cache=False,
            segment_bounds=segment_bounds(position_ids[0]),
        )


def test_examples_are_batched_with_others_of_similar_length():
    assert length_groups([900, 60, 55, 70]) == [[0], [3, 1, 2]], "a long example is not padded with short ones"
    assert length_groups([10, 10, 10]) == [[0, 1, 2]]
    assert length_groups([100, 50]) == [[0], [1]], "padding 50 to 100 would add more than a quarter"


@pytest.mark.parametrize(
    "lengths", [[40, 6, 9, 5], [12, 12, 12], [7, 30, 4]], ids=["long-first", "alike", "long-later"]
)
def test_a_shared_prefix_row_gives_each_example_the_attention_it_gets_with_the_prefix_in_front(lengths):
    prefix = 4  # the first example holds it (its first 4 tokens); every later example starts at position 4
    heads, kv_heads, width = 4, 2, 8
    generator = torch.Generator().manual_seed(0)
    total = sum(lengths)
    query = torch.randn(1, heads, total, width, generator=generator, requires_grad=True)
    key = torch.randn(1, kv_heads, total, width, generator=generator, requires_grad=True)
    value = torch.randn(1, kv_heads, total, width, generator=generator, requires_grad=True)
    bounds = [0] + torch.tensor(lengths).cumsum(0).tolist()
    prefixes = [0] + [prefix] * (len(lengths) - 1)
    ours = row_attention(query, key, value, bounds, prefixes, 0.0, None)
    expected = []
    for start, end, shared in zip(bounds[:-1], bounds[1:], prefixes):
        keys = torch.cat([key[:, :, :shared], key[:, :, start:end]], dim=2)
        values = torch.cat([value[:, :, :shared], value[:, :, start:end]], dim=2)
        whole_query = torch.cat([query[:, :, :shared], query[:, :, start:end]], dim=2)  # the example alone
        alone = torch.nn.functional.scaled_dot_product_attention(
            whole_query, keys, values, is_causal=True, enable_gqa=True
        )
        expected.append(alone[:, :, shared:])
    expected = torch.cat(expected, dim=2)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(ours.shape, generator=generator)
    gradients = [torch.autograd.grad((result * weights).sum(), (query, key, value)) for result in (ours, expected)]
    for mine, reference in zip(*gradients):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-4)
