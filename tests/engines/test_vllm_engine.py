"""The real vLLM engine on SmolLM2: same prompts, same greedy answers, same output shape as transformers."""

from __future__ import annotations

import pytest

from rayfleet.engines import EngineConfig, SamplingConfig, create_engine, vllm_available

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
