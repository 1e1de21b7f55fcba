"""The real vLLM engine on SmolLM2: same prompts, same greedy answers, same output shape as transformers."""

from __future__ import annotations

import re

import pytest

from rayfleet.engines import EngineConfig, SamplingConfig, create_engine, vllm_available
from rayfleet.evaluation.judge import VERDICT_FORMAT, JudgeConfig, parse_verdict

pytestmark = pytest.mark.slow

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three primary colors."}],
    [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "What does a compiler do?"}],
]


def test_vllm_is_installed():
    assert vllm_available(), "vLLM is part of the locked stack; run `make setup`"


def test_vllm_and_transformers_agree_greedily(smollm2_path):
    sampling = SamplingConfig(max_tokens=24, repetition_penalty=1.0)
    config = EngineConfig(model=str(smollm2_path), max_model_len=512, max_num_seqs=8)
    vllm_engine = create_engine(config.model_copy(update={"kind": "vllm"}))
    try:
        assert vllm_engine.name == "vllm"
        from_vllm = vllm_engine.generate(PROMPTS, sampling)
    finally:
        vllm_engine.close()
    transformers_engine = create_engine(config.model_copy(update={"kind": "transformers"}))
    from_transformers = transformers_engine.generate(PROMPTS, sampling)
    assert len(from_vllm) == len(from_transformers) == len(PROMPTS)
    for a, b in zip(from_vllm, from_transformers):
        assert a.prompt_tokens == b.prompt_tokens
        assert a.text, "vLLM returned an empty answer"
        # fp32 kernels differ slightly between engines: the first tokens must agree.
        assert a.token_ids[:8] == b.token_ids[:8], (a.text, b.text)
    assert "Paris" in from_vllm[0].text


def test_a_regex_holds_the_reply_to_the_judges_format_and_transformers_refuses_one(smollm2_path):
    judge = JudgeConfig()
    conversations = [judge.conversation("What is the capital of France?", "Paris.", answer)
                     for answer in ["Paris.", "Berlin is the capital.", "I like turtles."]]  # fmt: skip
    engine = create_engine(EngineConfig(kind="vllm", model=str(smollm2_path), max_model_len=512, max_num_seqs=4))
    try:
        replies = engine.generate(conversations, judge.sampling)
    finally:
        engine.close()
    assert all(re.fullmatch(VERDICT_FORMAT, reply.text) for reply in replies), [reply.text for reply in replies]
    assert all(parse_verdict(reply.text).score is not None for reply in replies)
    transformers_engine = create_engine(EngineConfig(kind="transformers", model=str(smollm2_path)))
    with pytest.raises(ValueError, match="needs the vLLM engine"):
        transformers_engine.generate(conversations[:1], judge.sampling)
