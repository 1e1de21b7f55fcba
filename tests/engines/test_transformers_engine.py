"""The transformers engine on a tiny random Llama: order, shape, budgets, determinism, stop strings, penalties."""

from __future__ import annotations

import pytest
import torch

from rayfleet.engines import EngineConfig, GenerationEngine, SamplingConfig, create_engine
from rayfleet.engines.transformers_engine import OpenAIPenalties


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    return create_engine(EngineConfig(kind="transformers", model=str(tiny_llama_path), transformers_batch_size=3))


def conversations(n):
    return [[{"role": "user", "content": f"Question number {i}: " + "why? " * i}] for i in range(n)]


def test_satisfies_the_protocol(engine):
    assert isinstance(engine, GenerationEngine)
    assert engine.name == "transformers"


def test_one_generation_per_prompt_in_order(engine):
    sampling = SamplingConfig(max_tokens=8)
    batched = engine.generate(conversations(7), sampling)
    assert len(batched) == 7
    # Batching (sorted by length, left padded) must not change any answer.
    one_by_one = [engine.generate([conversation], sampling)[0] for conversation in conversations(7)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in one_by_one]
    for conversation, generation in zip(conversations(7), batched):
        assert generation.prompt_tokens == len(engine.prompt_token_ids(conversation))


def test_max_tokens_is_respected(engine):
    [generation] = engine.generate(conversations(1), SamplingConfig(max_tokens=5, repetition_penalty=1.0))
    assert 1 <= generation.completion_tokens <= 5
    if generation.completion_tokens == 5 and engine.tokenizer.eos_token_id not in generation.token_ids:
        assert generation.finish_reason == "length"


def test_greedy_is_deterministic_and_sampling_is_seeded(engine):
    greedy = SamplingConfig(max_tokens=6)
    assert engine.generate(conversations(2), greedy) == engine.generate(conversations(2), greedy)
    sampled = SamplingConfig(max_tokens=6, temperature=1.0, seed=3)
    assert engine.generate(conversations(2), sampled) == engine.generate(conversations(2), sampled)


def test_unseeded_sampling_samples_afresh_each_call(engine):
    unseeded = SamplingConfig(max_tokens=8, temperature=1.0, seed=None, repetition_penalty=1.0)
    answers = {tuple(engine.generate(conversations(1), unseeded)[0].token_ids) for _ in range(5)}
    assert len(answers) > 1  # a random Llama's near-uniform distribution: 5 equal draws of 8 tokens means a fixed seed


def test_count_tokens_matches_tokenizer(engine):
    assert engine.count_tokens("hello world") == len(
        engine.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    )
    # A special token's spelling counts as the text it stays in a message, as the prompt will hold it.
    spelled = "a turn ends with <|im_end|>"
    in_prompt = engine.prompt_token_ids([{"role": "user", "content": spelled}])
    as_text = engine.tokenizer(spelled, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert engine.count_tokens(spelled) == len(as_text)
    assert engine.count_tokens(spelled) > len(engine.tokenizer(spelled, add_special_tokens=False)["input_ids"])
    assert len(in_prompt) > engine.count_tokens(spelled)


def test_a_stop_string_cuts_the_reply_before_its_first_occurrence(engine):
    plain = SamplingConfig(max_tokens=12, repetition_penalty=1.0)
    [free] = engine.generate(conversations(1), plain)
    stop = free.text[len(free.text) // 2 :][:3].strip() or free.text[-1]
    [stopped] = engine.generate(conversations(1), plain.model_copy(update={"stop": ["never-generated-zzz", stop]}))
    assert stopped.text == free.text[: free.text.find(stop)].strip()
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert stopped.completion_tokens <= free.completion_tokens


def test_penalties_count_generated_tokens_only_once_or_per_occurrence():
    penalties = OpenAIPenalties(prompt_width=2, presence=0.5, frequency=1.0)
    input_ids = torch.tensor([[7, 7, 3, 3, 5]])  # prompt 7 7; generated 3 3 5
    scores = penalties(input_ids, torch.zeros(1, 8))
    expected = torch.zeros(1, 8)
    expected[0, 3] = -(0.5 + 2 * 1.0)
    expected[0, 5] = -(0.5 + 1.0)
    assert torch.equal(scores, expected)  # token 7, only in the prompt, keeps its logit
