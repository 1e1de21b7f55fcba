"""bench.summarize: paths in fresh processes, medians over repeated runs."""

from __future__ import annotations

import pytest

from bench.summarize import median_run


def test_median_run_is_the_middle_run_by_throughput():
    runs = [
        {"tokens_per_s": 30.0, "id": "fast"},
        {"tokens_per_s": 20.0, "id": "slow"},
        {"tokens_per_s": 25.0, "id": "mid"},
    ]
    assert median_run(runs)["id"] == "mid"
    assert median_run(runs[:2])["id"] == "slow"
    assert median_run(runs[:1])["id"] == "fast"


def test_a_path_in_a_fresh_process_reports_what_it_generated_and_when_it_finished():
    from bench.summarize import SummarizeBenchConfig, run_in_fresh_process
    from rayfleet.engines import SamplingConfig

    document = ("paper-1", "We present a small model for summarizing papers. It is trained on abstracts. " * 8)
    config = SummarizeBenchConfig(documents=1, max_tokens=4, max_model_len=512)
    figures = run_in_fresh_process("naive", [document], config, SamplingConfig(max_tokens=4))
    assert 1 <= figures["completion_tokens"] <= 4
    assert figures["prompt_tokens"] > 100
    # Both figures are rounded to 2 decimals from the same unrounded time, so they agree to that rounding.
    rate = figures["completion_tokens"] / figures["seconds"]
    assert 0 < figures["seconds"]
    assert figures["tokens_per_s"] == pytest.approx(rate, abs=0.01 + rate * 0.01 / figures["seconds"])
