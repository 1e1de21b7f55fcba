"""The real vLLM engine on SmolLM2: same prompts, same greedy answers, same output shape as transformers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from rayfleet.engines import EngineConfig, SamplingConfig, create_engine, vllm_available
from rayfleet.evaluation.judge import VERDICT_FORMAT, JudgeConfig, parse_verdict

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three primary colors."}],
    [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "What does a compiler do?"}],
]


def test_vllm_is_installed():
    assert vllm_available(), "vLLM is part of the locked stack; run `make setup`"


@pytest.fixture(scope="module")
def engines(smollm2_path):
    """One vLLM engine and one transformers engine on SmolLM2, shared by the tests of this module."""
    config = EngineConfig(model=str(smollm2_path), max_model_len=512, max_num_seqs=8)
    vllm_engine = create_engine(config.model_copy(update={"kind": "vllm"}))
    yield vllm_engine, create_engine(config.model_copy(update={"kind": "transformers"}))
    vllm_engine.close()


def test_vllm_and_transformers_agree_greedily(engines):
    sampling = SamplingConfig(max_tokens=24, repetition_penalty=1.0)
    vllm_engine, transformers_engine = engines
    assert vllm_engine.name == "vllm"
    from_vllm = vllm_engine.generate(PROMPTS, sampling)
    from_transformers = transformers_engine.generate(PROMPTS, sampling)
    assert len(from_vllm) == len(from_transformers) == len(PROMPTS)
    for a, b in zip(from_vllm, from_transformers):
        assert a.prompt_tokens == b.prompt_tokens
        assert a.text, "vLLM returned an empty answer"
        # fp32 kernels differ slightly between engines: the first tokens must agree.
        assert a.token_ids[:8] == b.token_ids[:8], (a.text, b.text)
    assert "Paris" in from_vllm[0].text


def test_stop_strings_and_penalties_mean_the_same_in_both_engines(engines):
    plain = SamplingConfig(max_tokens=24, repetition_penalty=1.0)
    stop = plain.model_copy(update={"stop": [","]})
    penalized = plain.model_copy(update={"presence_penalty": 0.5, "frequency_penalty": 1.0})
    prompts = [[{"role": "user", "content": "Name three primary colors."}],
               [{"role": "user", "content": "Write the word cat ten times."}]]  # fmt: skip
    replies = {(engine.name, name): engine.generate(prompts, sampling)
               for engine in engines
               for name, sampling in [("plain", plain), ("stop", stop), ("penalized", penalized)]}  # fmt: skip
    for name in ("stop", "penalized"):
        assert [r.text for r in replies["vllm", name]] == [r.text for r in replies["transformers", name]], name
    for free, stopped in zip(replies["vllm", "plain"], replies["vllm", "stop"]):
        assert "," in free.text and stopped.text == free.text[: free.text.index(",")].strip()
        assert stopped.finish_reason == "stop"
    repeated = replies["vllm", "plain"][1].text
    assert repeated.count("Cat") >= 5 and replies["vllm", "penalized"][1].text.count("Cat") < repeated.count("Cat")


def test_a_regex_holds_the_reply_to_the_judges_format_and_transformers_refuses_one(engines):
    judge = JudgeConfig()
    conversations = [judge.conversation("What is the capital of France?", "Paris.", answer)
                     for answer in ["Paris.", "Berlin is the capital.", "I like turtles."]]  # fmt: skip
    engine, transformers_engine = engines
    replies = engine.generate(conversations, judge.sampling)
    assert all(re.fullmatch(VERDICT_FORMAT, reply.text) for reply in replies), [reply.text for reply in replies]
    assert all(parse_verdict(reply.text).score is not None for reply in replies)
    with pytest.raises(ValueError, match="needs the vLLM engine"):
        transformers_engine.generate(conversations[:1], judge.sampling)


CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def test_a_json_schema_or_json_object_holds_the_reply_to_json_and_transformers_refuses_one(engines):
    engine, transformers_engine = engines
    question = [{"role": "user", "content": "Which is the largest city of France, and how many people live there?"}]
    by_schema = engine.generate([question], SamplingConfig(max_tokens=64, json_schema=CITY_SCHEMA))[0]
    assert by_schema.finish_reason == "stop", by_schema.text
    jsonschema.validate(json.loads(by_schema.text), CITY_SCHEMA)
    free = engine.generate([question], SamplingConfig(max_tokens=64))[0].text
    with pytest.raises(json.JSONDecodeError):
        json.loads(free)  # unconstrained, this model answers in prose: the schema is what made it JSON

    ask_json = [{"role": "user", "content": 'Reply with a JSON object whose key "answer" holds the capital of Italy.'}]
    by_object = engine.generate([ask_json], SamplingConfig(max_tokens=96, json_object=True))[0]
    assert by_object.finish_reason == "stop" and isinstance(json.loads(by_object.text), dict), by_object.text

    with pytest.raises(ValueError, match="sampling.json_schema .* needs the vLLM engine"):
        transformers_engine.generate([question], SamplingConfig(json_schema=CITY_SCHEMA))
    with pytest.raises(ValueError, match="set at most one of regex, json_object, json_schema"):
        SamplingConfig(json_object=True, regex="[0-9]+")


def test_an_int8_checkpoint_runs_with_bf16_activations_on_cpus_with_amx(tmp_path, tiny_llama_path):
    from rayfleet.engines.vllm_engine import cpu_dtype
    from rayfleet.quantization import quantize_model

    quantize_model(tiny_llama_path, tmp_path / "w8a8", "w8a8_int8")
    int8 = str(tmp_path / "w8a8")
    assert cpu_dtype(int8, "float32", amx=True) == "bfloat16"  # vLLM's AMX int8 kernel takes no fp32
    assert cpu_dtype(int8, "float32", amx=False) == "float32"  # oneDNN does
    assert cpu_dtype(int8, "float16", amx=True) == "float16"
    assert cpu_dtype(str(tiny_llama_path), "float32", amx=True) == "float32"  # full precision stays as asked


def test_vllm_logs_go_to_stderr_so_a_jobs_stdout_holds_only_its_report():
    """vLLM logs to stdout by default; Ray forwards an engine worker's stdout to the job's."""
    script = (
        "from rayfleet.engines.vllm_engine import send_vllm_logs_to_stderr\n"
        "send_vllm_logs_to_stderr()\n"
        "from vllm.config.logging import LoggingConfig\n"
        "from vllm.logger import configure_logging, init_logger\n"
        "configure_logging(LoggingConfig())\n"  # as the engine's arguments do when it starts
        "init_logger('vllm.rayfleet_test').warning('a vLLM log line')\n"
        "print('{\"report\": 1}')\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "VLLM_LOGGING_STREAM"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**environment, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == '{"report": 1}\n' and "a vLLM log line" in done.stderr
