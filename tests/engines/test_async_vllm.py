"""The serving engine's log probabilities, from vLLM's own per-token records (``vllm.logprobs.Logprob``).

The engine itself streams in tests/serve_apps/test_openai_app.py, where the served values are
checked against transformers' log probabilities.
"""

from __future__ import annotations

import math

import pytest
from vllm.logprobs import Logprob

from rayfleet.engines.async_vllm import FORBIDDEN_LOGPROB, StreamSampling, TokenLogprob, token_logprobs


def test_each_token_keeps_its_own_log_probability_and_the_likeliest_in_rank_order():
    positions = [
        {7: Logprob(-0.5, 1, "A"), 3: Logprob(-1.5, 2, "B"), 9: Logprob(-2.0, 3, "C")},
        # the sampler chose a token outside the top 2 (the log probabilities are taken before penalties)
        {4: Logprob(-6.0, 40, " x"), 5: Logprob(-0.1, 1, " y"), 6: Logprob(-2.5, 2, " z")},
    ]
    assert token_logprobs([7, 4], positions, top=2) == (
        TokenLogprob("A", -0.5, (("A", -0.5), ("B", -1.5))),
        TokenLogprob(" x", -6.0, ((" y", -0.1), (" z", -2.5))),
    )
    assert token_logprobs([7, 4], positions, top=0) == (TokenLogprob("A", -0.5), TokenLogprob(" x", -6.0))
    assert token_logprobs([7], None, top=2) == ()  # none asked for


def test_a_prompts_first_token_has_its_text_and_no_log_probability():
    positions = [None, {5: Logprob(-3.0, 4, " cat"), 6: Logprob(-0.2, 1, " dog")}]
    assert token_logprobs([4, 5], positions, top=1, text_of={4: "The"}.get) == (
        TokenLogprob("The", None),
        TokenLogprob(" cat", -3.0, ((" dog", -0.2),)),
    )


def test_a_token_an_output_constraint_forbids_is_reported_as_a_finite_number():
    positions = [{1: Logprob(0.0, 1, "{"), 2: Logprob(-math.inf, 2, "x")}]
    [token] = token_logprobs([1], positions, top=2)
    assert token.top == (("{", 0.0), ("x", FORBIDDEN_LOGPROB)) and all(math.isfinite(v) for _, v in token.top)


def test_a_served_request_may_ask_for_at_most_the_engines_limit():
    assert StreamSampling(logprobs=20, logit_bias={5: -100.0}).logprobs == 20
    with pytest.raises(ValueError, match="less than or equal to 20"):
        StreamSampling(logprobs=21)
