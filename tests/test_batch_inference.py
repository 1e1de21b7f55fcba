"""Generation on a Ray Data actor pool returns what the engine returns, in input order."""

from __future__ import annotations

import pytest

from rayfleet.batch_inference import generate_on_ray
from rayfleet.engines import EngineConfig, SamplingConfig, create_engine

pytestmark = pytest.mark.slow


def test_replies_match_the_engine_and_keep_input_order(ray_cluster, tiny_llama_path):
    engine = EngineConfig(kind="transformers", model=str(tiny_llama_path), max_model_len=256)
    sampling = SamplingConfig(max_tokens=6)
    conversations = [[{"role": "user", "content": f"Question number {index}: {'why ' * index}?"}] for index in range(7)]

    generations = generate_on_ray(conversations, engine, sampling, batch_size=3)

    expected = create_engine(engine).generate(conversations, sampling)
    assert [g.text for g in generations] == [g.text for g in expected]
    assert [g.prompt_tokens for g in generations] == [g.prompt_tokens for g in expected]
    assert generate_on_ray([], engine, sampling) == []
