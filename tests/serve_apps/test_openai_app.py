"""End to end: the Serve app on a real local Ray head, real vLLM with SmolLM2, real S3, the official openai client.

The app starts once for this module (~1-2 min on 2 cores); every test sends small requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pyarrow.parquet as pq
import pytest
import yaml

from rayfleet import storage
from rayfleet.config import read_yaml
from serve_apps.cli import serve_file
from serve_apps.targets import choose_arm
from tests.conftest import free_port
from tests.serve_apps.conftest import API_KEY

RETIRED_KEY = "retired-key-still-in-the-heads-environment"

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PAPER_QUESTION = "According to the paper, which dataset do the authors evaluate their parser on?"
LONG_ANSWER = "Write a long story about a dragon who learns to fly."
# About 210 tokens with the chat template: their prefill is ~45 GFLOP of fp32 matmuls, which no CPU of a
# few cores does within the hasty path's 20 ms (0.2 s was once beaten in CI), while the request still
# reaches vLLM before the timeout's cancel does, most often.
LONG_PROMPT = LONG_ANSWER + " The dragon lives in the mountains above a small village by the sea." * 12


def app_args(artifacts) -> dict:
    """The app's args for this module: every kind of path, small limits, an A/B test."""
    return {
        "engines": {"default": {"engine": {"kind": "vllm", "cpu_kv_cache_gib": 1, "max_model_len": 2048,
                                           "max_num_seqs": 16},
                                "max_loras": 2, "max_lora_rank": 8}},
        "paths": {
            "base": {"kind": "base", "timeout_s": 60},
            "finetuned": {"kind": "finetuned", "registry": artifacts.registry, "default_adapter": "qa@latest",
                          "fallback": ["base"], "timeout_s": 60},
            "rag": {"kind": "rag", "index": artifacts.index, "index_refresh_s": 1, "top_k": 2,
                    "max_context_tokens": 256, "fallback": ["base"], "timeout_s": 60},
            "broken": {"kind": "fault_injection", "mode": "error", "fallback": ["base"]},
            "stuck": {"kind": "fault_injection", "mode": "hang", "timeout_s": 2, "fallback": ["base"]},
            "hasty": {"kind": "base", "timeout_s": 0.02, "fallback": ["base"]},  # no first token of LONG_PROMPT
        },
        "router": {"model": artifacts.router, "relevance": {"index": artifacts.index, "refresh_s": 1}},
        "ingress": {"limits": {"max_prompt_tokens": 256, "max_tokens": 48, "default_max_tokens": 8,
                               "max_in_flight": 6}},
        "ab_tests": [{"name": "qa-v1-v2", "applies_to": "rayfleet-finetuned",
                      "arms": [{"name": "v1", "weight": 3, "model": "rayfleet-finetuned:qa@1"},
                               {"name": "v2", "weight": 1, "model": "rayfleet-finetuned:qa@2"}]}],
        "request_log": {"uri": artifacts.logs, "batch_rows": 1000, "flush_seconds": 2},
    }  # fmt: skip


@pytest.fixture(scope="module")
def app(ray_cluster, serve_artifacts, tmp_path_factory):
    """The running app, started as ``make serve`` starts it: ``python -m serve_apps.cli up`` with the shipped
    local Serve config (its runtime environment, proxy), this module's app args and keys from the environment.
    Yields the app's config as deployed and its base URL."""
    from ray import serve

    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    serve_config = read_yaml(str(REPO / "serve_apps" / "configs" / "local.yaml"))
    serve_config["http_options"]["port"] = port
    serve_config["applications"][0]["args"] = app_args(serve_artifacts)
    # As a key exported when the Ray head started reaches the replicas: retired, it must not let anyone in.
    serve_config["applications"][0]["runtime_env"]["env_vars"]["RAYFLEET_API_KEYS"] = RETIRED_KEY
    (folder / "serve.yaml").write_text(yaml.safe_dump(serve_config))
    keys_file = folder / "api-keys"
    started = subprocess.run(
        [sys.executable, "-m", "serve_apps.cli", "up", f"serve_config={folder / 'serve.yaml'}",
         f"address={ray_cluster.address_info['gcs_address']}", f"keys_file={keys_file}"],
        cwd=REPO, env={**os.environ, "RAYFLEET_API_KEYS": f"another-key, {API_KEY}"}, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert started.returncode == 0, f"{started.stdout[-2000:]}\n{started.stderr[-4000:]}"
    assert f"serving rayfleet at http://127.0.0.1:{port}/v1 (API keys in {keys_file})" in started.stdout
    assert keys_file.read_text().split() == ["another-key", API_KEY] and keys_file.stat().st_mode & 0o077 == 0
    config = serve_file(str(folder / "serve.yaml")).applications[0].args
    config.ingress.auth.keys_file = str(keys_file)  # as the command set it
    yield config, f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app[1]}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def chat(client, model, text="What is the capital of France?", max_tokens=8, **options):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, **options
    )


CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def test_a_json_schema_response_format_holds_the_answer_streamed_or_not_and_one_the_engine_cannot_take_is_a_400(
    client,
):
    question = "Which is the largest city of France, and how many people live there?"
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True}}
    answer = chat(client, "rayfleet-base", question, max_tokens=48, response_format=response_format).parse().choices[0]
    assert answer.finish_reason == "stop", answer.message.content
    jsonschema.validate(json.loads(answer.message.content), CITY_SCHEMA)
    stream = client.chat.completions.create(model="rayfleet-base", messages=[{"role": "user", "content": question}],
                                            max_tokens=48, response_format=response_format, stream=True)  # fmt: skip
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == answer.message.content

    unknown_format = {"type": "string", "format": "zip-code"}  # a valid JSON Schema no grammar compiler here takes
    refused_format = {"type": "json_schema", "json_schema": {"name": "code", "schema": unknown_format}}
    with pytest.raises(openai.BadRequestError, match="the engine cannot decode to it: .*zip-code") as no:
        chat(client, "rayfleet-base", response_format=refused_format)
    assert no.value.param == "response_format" and no.value.code == "invalid_response_format"


def test_models_lists_every_path(client):
    names = {model.id for model in client.models.list()}
    assert {"rayfleet", "rayfleet-base", "rayfleet-finetuned", "rayfleet-rag", "rayfleet-broken"} <= names


def test_base_path_answers_with_its_headers(client):
    raw = chat(client, "rayfleet-base")
    completion = raw.parse()
    assert raw.headers["x-rayfleet-path"] == "base" and raw.headers["x-rayfleet-selected-by"] == "model"
    assert "paris" in completion.choices[0].message.content.lower()
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 10
    assert completion.model == "rayfleet-base"


def test_router_picks_a_path_and_reports_its_confidence_and_relevance(client):
    raw = chat(client, "rayfleet", PAPER_QUESTION)
    assert raw.headers["x-rayfleet-selected-by"] == "router"
    assert raw.headers["x-rayfleet-path"] == "rag"
    assert 0.0 < float(raw.headers["x-rayfleet-router-confidence"]) <= 1.0
    general = chat(client, "rayfleet", "What's a good name for a pet goldfish?")
    assert general.headers["x-rayfleet-path"] == "base"
    assert float(general.headers["x-rayfleet-relevance"]) < float(raw.headers["x-rayfleet-relevance"])


def test_router_placed_in_the_ingress_decides_as_the_router_deployment_does(app):
    from ray import serve

    from serve_apps.openai_app import route_function

    config = app[0].model_copy(update={"router": app[0].router.model_copy(update={"placement": "ingress"})})
    in_process = route_function(config, router=None)  # what an ingress replica builds without a Router deployment
    deployed = serve.get_deployment_handle("Router", app_name="rayfleet")
    for question in (PAPER_QUESTION, "What's a good name for a pet goldfish?"):
        choice = asyncio.run(in_process(question))
        assert choice == deployed.route.remote(question).result()
        assert choice.path in {"rag", "base"} and 0.0 < choice.confidence <= 1.0


def test_rag_answers_with_citations(client, serve_artifacts):
    from rayfleet.retrieval import Retriever

    raw = chat(client, "rayfleet-rag", PAPER_QUESTION, max_tokens=16)
    completion = raw.parse()
    citations = completion.model_extra["citations"]
    indexed = set(Retriever.load(serve_artifacts.index).rows["chunk_id"].to_pylist())
    assert len(citations) >= 1 and all(c["chunk_id"] in indexed for c in citations)
    assert all(set(c) >= {"doc_id", "chunk_id", "page", "score"} for c in citations)
    assert raw.headers["x-rayfleet-citations"].startswith(f"{citations[0]['doc_id']}|{citations[0]['chunk_id']}|")
    assert completion.choices[0].message.content


def test_rag_answers_from_a_new_index_version_without_a_redeploy(client, serve_artifacts):
    from tests.conftest import chunk_rows
    from tests.serve_apps.conftest import build_index

    served = {row["doc_id"] for row in chunk_rows(4)}
    rows = chunk_rows(6)
    new_chunk = next(row for row in rows if row["doc_id"] not in served and row["ordinal"] == 1)
    build_index(rows, serve_artifacts.index, version="v2")  # what jobs.build_index does after an ingest
    deadline = time.monotonic() + 90
    while True:  # the path looks for a new version at most every second, and loads it in the background
        citations = chat(client, "rayfleet-rag", new_chunk["text"][:400], max_tokens=1).parse().model_extra["citations"]
        if any(citation["doc_id"] not in served for citation in citations):
            break
        assert time.monotonic() < deadline, "the RAG path never served the new index version"
        time.sleep(1)
    assert citations[0]["chunk_id"] == new_chunk["chunk_id"], "its own text finds the new chunk first"


def test_finetuned_path_applies_the_named_adapter_version(client):
    base = chat(client, "rayfleet-base", max_tokens=12).parse().choices[0].message.content
    raw = chat(client, "rayfleet-finetuned:qa@2", max_tokens=12)
    assert raw.headers["x-rayfleet-adapter"] == "qa@2" and raw.headers["x-rayfleet-path"] == "finetuned"
    assert raw.parse().model == "rayfleet-finetuned:qa@2"
    assert raw.parse().choices[0].message.content != base  # the random LoRA changes greedy output


def test_unknown_adapter_or_model_is_404(client):
    with pytest.raises(openai.NotFoundError, match="qa@9"):
        chat(client, "rayfleet-finetuned:qa@9")
    with pytest.raises(openai.NotFoundError, match="nope"):
        chat(client, "rayfleet-nope")
    with pytest.raises(openai.NotFoundError):
        chat(client, "gpt-4o")


def test_chat_streaming_matches_the_whole_answer(client):
    whole = chat(client, "rayfleet-base", max_tokens=12).parse().choices[0].message.content
    stream = client.chat.completions.create(
        model="rayfleet-base", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole  # the same text, as generated
    assert sum(1 for c in chunks if c.choices) >= 3  # really streamed, token by token
    assert chunks[-1].usage.completion_tokens == 12 or chunks[-2].choices[0].finish_reason == "stop"


def test_completions_streaming_and_not(client):
    whole = client.completions.create(model="rayfleet-base", prompt="The capital of France is", max_tokens=6)
    assert whole.choices[0].text
    pieces = [c.choices[0].text for c in client.completions.create(
        model="rayfleet-base", prompt="The capital of France is", max_tokens=6, stream=True) if c.choices]  # fmt: skip
    assert "".join(pieces) == whole.choices[0].text  # the continuation as generated, its leading space too


def test_stop_sequences_end_answers_streamed_or_not(client):
    question = "Name three primary colors."
    free = chat(client, "rayfleet-base", question, max_tokens=24).parse().choices[0].message.content
    stop = free.split()[2]
    stopped = chat(client, "rayfleet-base", question, max_tokens=24, stop=[stop]).parse().choices[0]
    assert stopped.message.content == free[: free.index(stop)] and stopped.finish_reason == "stop"
    chunks = list(client.chat.completions.create(
        model="rayfleet-base", messages=[{"role": "user", "content": question}], max_tokens=24, stop=stop,
        stream=True))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == stopped.message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def token_id(tokenizer, piece: bytes) -> int:
    """The id of the token whose text is ``piece`` (UTF-8), through the byte-level vocabulary."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return tokenizer.convert_tokens_to_ids("".join(bytes_to_unicode()[byte] for byte in piece))


def reference_logprobs(model_path, prompt: str, answer_pieces: list[bytes]):
    """Each place's log probabilities as transformers computes them (fp32), teacher-forced on the answer's
    tokens, and the token ids of the answer (read back from their UTF-8 bytes through the byte-level vocabulary)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    answer_ids = [token_id(tokenizer, piece) for piece in answer_pieces]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits, dim=-1), answer_ids, tokenizer


def test_log_probabilities_are_the_models_own_streamed_or_not(client, smollm2_path):
    prompt = "The three largest cities of France are"
    whole = client.completions.create(model="rayfleet-base", prompt=prompt, max_tokens=8, logprobs=3)
    [choice] = whole.choices
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == whole.usage.completion_tokens == 8
    assert "".join(logprobs.tokens) == choice.text and choice.finish_reason == "length"
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:place])) for place in range(8)]
    reference, answer_ids, tokenizer = reference_logprobs(smollm2_path, prompt, [t.encode() for t in logprobs.tokens])
    for place, token_id in enumerate(answer_ids):
        own = reference[place, token_id].item()
        assert logprobs.token_logprobs[place] == pytest.approx(own, abs=5e-3)
        top = reference[place].topk(3)
        expected = {tokenizer.decode([i]): value for i, value in zip(top.indices.tolist(), top.values.tolist())}
        expected[logprobs.tokens[place]] = own  # the chosen token is listed too, as OpenAI's completions do
        assert logprobs.top_logprobs[place] == pytest.approx(expected, abs=5e-3)

    streamed = [c.choices[0] for c in client.completions.create(
        model="rayfleet-base", prompt=prompt, max_tokens=8, logprobs=3, stream=True) if c.choices]  # fmt: skip
    assert [t for c in streamed for t in c.logprobs.tokens] == logprobs.tokens
    assert [o for c in streamed for o in c.logprobs.text_offset] == logprobs.text_offset
    assert [v for c in streamed for v in c.logprobs.token_logprobs] == pytest.approx(logprobs.token_logprobs, abs=1e-4)

    answer = chat(client, "rayfleet-base", max_tokens=6, logprobs=True, top_logprobs=2).parse()
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    assert b"".join(bytes(entry.bytes) for entry in content).decode().startswith(answer.choices[0].message.content)
    assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in content)
    assert all(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob for entry in content)
    chunks = list(client.chat.completions.create(
        model="rayfleet-base", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=6,
        logprobs=True, top_logprobs=2, stream=True))  # fmt: skip
    assert [e.token for c in chunks if c.choices for e in c.choices[0].logprobs.content] == [e.token for e in content]

    tuned = chat(client, "rayfleet-finetuned:qa@1", max_tokens=6, logprobs=True).parse()
    assert len(tuned.choices[0].logprobs.content) == tuned.usage.completion_tokens
    assert all(entry.top_logprobs == [] for entry in tuned.choices[0].logprobs.content)
    assert abs(tuned.choices[0].logprobs.content[0].logprob - content[0].logprob) > 1e-3  # the adapter's own
    assert chat(client, "rayfleet-base", max_tokens=2).parse().choices[0].logprobs is None  # none unless asked

    # a stop sequence: the tokens generated up to the one that completed it, which the text leaves out
    stop = logprobs.tokens[4]
    cut = choice.text.index(stop)
    stopped = client.completions.create(model="rayfleet-base", prompt=prompt, max_tokens=8, logprobs=0, stop=stop)
    assert stopped.choices[0].text == choice.text[:cut] and stopped.choices[0].finish_reason == "stop"
    reached = next(k for k in range(1, 9) if len("".join(logprobs.tokens[:k])) >= cut + len(stop))
    assert stopped.choices[0].logprobs.tokens == logprobs.tokens[:reached]
    assert len(stopped.choices[0].logprobs.tokens) == stopped.usage.completion_tokens

    # a response format's mask: the tokens it forbids are -9999, a number JSON can carry
    schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA}}
    shaped = chat(client, "rayfleet-base", max_tokens=6, logprobs=True, top_logprobs=20, response_format=schema)
    places = shaped.parse().choices[0].logprobs.content
    assert any(top.logprob == -9999 for place in places for top in place.top_logprobs)
    echoed = client.completions.create(model="rayfleet-base", prompt=prompt, max_tokens=2, logprobs=1, echo=True)
    [echo] = echoed.choices
    assert echo.text.startswith(prompt) and "".join(echo.logprobs.tokens) == echo.text
    assert echo.logprobs.token_logprobs[0] is None and echo.logprobs.top_logprobs[0] is None
    assert len(echo.logprobs.tokens) == echoed.usage.prompt_tokens + echoed.usage.completion_tokens
    echo_stream = client.completions.create(model="rayfleet-base", prompt=prompt, max_tokens=2, logprobs=1, echo=True,
                                            stream=True)  # fmt: skip
    streamed_echo = [chunk.choices[0] for chunk in echo_stream if chunk.choices]
    assert "".join(c.text for c in streamed_echo) == echo.text
    assert [o for c in streamed_echo for o in c.logprobs.text_offset] == echo.logprobs.text_offset
    tuned_echo = client.completions.create(model="rayfleet-finetuned:qa@1", prompt=prompt, max_tokens=1, logprobs=0,
                                           echo=True).choices[0]  # fmt: skip
    assert tuned_echo.logprobs.tokens[: len(echo.logprobs.tokens) - 2] == echo.logprobs.tokens[:-2]
    assert abs(tuned_echo.logprobs.token_logprobs[1] - echo.logprobs.token_logprobs[1]) > 1e-3  # the adapter's
    with pytest.raises(openai.BadRequestError, match="the RAG path answers from a prompt of its own") as rag:
        client.completions.create(model="rayfleet-rag", prompt=prompt, max_tokens=1, logprobs=1, echo=True)
    assert rag.value.param == "echo"
    with pytest.raises(openai.BadRequestError, match="logprobs") as too_many:
        client.completions.create(model="rayfleet-base", prompt=prompt, max_tokens=2, logprobs=6)
    assert too_many.value.param == "logprobs"


MULTIPLE_CHOICE_TASK = """task: rayfleet_served_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


def test_lm_evaluation_harness_scores_the_served_model_as_it_scores_the_model_itself(
    app, smollm2_path, tmp_path, monkeypatch
):
    """lm-evaluation-harness's local-completions client (token-id prompts, four to a request, echo with logprobs)
    against the served base path gives every choice the log-likelihood its own transformers run of the model gives."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    rows = [
        {"question": "What is the capital of France?", "choices": [" Paris", " Berlin", " a banana"], "label": 0},
        {"question": "How many legs does a spider have?", "choices": [" two", " eight", " blue"], "label": 1},
        {"question": "What colour is the sky on a clear day?", "choices": [" green", " loud", " blue"], "label": 2},
    ]
    (tmp_path / "choices.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "choice.yaml").write_text(MULTIPLE_CHOICE_TASK.format(data=tmp_path / "choices.jsonl"))
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)

    def loglikelihoods(model: str, model_args: dict, batch_size: int) -> list[float]:
        results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["rayfleet_served_choice"],
                                          task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
                                          log_samples=True, batch_size=batch_size)  # fmt: skip
        samples = sorted(results["samples"]["rayfleet_served_choice"], key=lambda sample: sample["doc_id"])
        return [float(response[0][0]) for sample in samples for response in sample["resps"]]

    served = loglikelihoods("local-completions", {
        "base_url": f"{app[1]}/v1/completions", "model": "rayfleet-base", "tokenizer": str(smollm2_path),
        "tokenizer_backend": "huggingface", "num_concurrent": 1, "max_retries": 1}, batch_size=4)  # fmt: skip
    own = loglikelihoods("hf", {"pretrained": str(smollm2_path), "dtype": "float32", "device": "cpu"}, batch_size=1)
    assert len(served) == 9 and served == pytest.approx(own, abs=1e-2)


def test_logit_bias_bans_and_forces_tokens(client, smollm2_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    prompt = "The capital of France is"
    free = client.completions.create(model="rayfleet-base", prompt=prompt, max_tokens=3, logprobs=0).choices[0]
    likeliest = free.logprobs.tokens[0]
    ban = {str(token_id(tokenizer, likeliest.encode())): -100}
    banned = client.completions.create(model="rayfleet-base", prompt=prompt, max_tokens=3, logprobs=0, logit_bias=ban)
    assert banned.choices[0].logprobs.tokens[0] != likeliest
    [zebra] = tokenizer(" zebra", add_special_tokens=False)["input_ids"][:1]
    forced = client.chat.completions.create(model="rayfleet-base", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=3, logit_bias={str(zebra): 100})  # fmt: skip
    assert forced.choices[0].message.content == tokenizer.decode([zebra]) * 3


def test_n_answers_come_as_indexed_choices_streamed_or_not(client):
    asked = dict(model="rayfleet-base", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6, n=3,
                 temperature=1.0, seed=11, logprobs=True)  # fmt: skip
    whole = client.chat.completions.create(**asked)
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in whole.choices}) > 1  # each answer samples with its own seed
    assert whole.usage.completion_tokens == sum(len(choice.logprobs.content) for choice in whole.choices)
    streamed: dict[int, str] = {}
    roles: dict[int, list] = {}
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
            roles.setdefault(choice.index, []).append(choice.delta.role)
    assert streamed == {choice.index: choice.message.content for choice in whole.choices}  # the same seeds
    assert all(said[0] == "assistant" and set(said[1:]) <= {None} for said in roles.values())
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # the openai client's stream helper assembles the answers (it needs each answer's first chunk in index order)
    with client.chat.completions.stream(**asked) as stream:
        for _ in stream:
            pass
        final = stream.current_completion_snapshot
    assert [(c.message.content, c.finish_reason) for c in final.choices] == [
        (c.message.content, c.finish_reason) for c in whole.choices]  # fmt: skip

    prompted = dict(model="rayfleet-base", prompt="Once upon a time", max_tokens=5, n=2, temperature=1.0, seed=3,
                    logprobs=1)  # fmt: skip
    texts = client.completions.create(**prompted).choices
    offsets: dict[int, list[int]] = {}
    for chunk in client.completions.create(**prompted, stream=True):
        for choice in chunk.choices:
            offsets.setdefault(choice.index, []).extend(choice.logprobs.text_offset)
    assert offsets == {c.index: c.logprobs.text_offset for c in texts} and all(o[0] == 0 for o in offsets.values())

    completions = client.completions.create(model="rayfleet-rag", prompt=PAPER_QUESTION, max_tokens=4, n=2,
                                            temperature=1.0)  # fmt: skip
    assert [choice.index for choice in completions.choices] == [0, 1] and completions.model_extra["citations"]


def test_rag_streaming_sends_citations_first(client):
    stream = client.chat.completions.create(
        model="rayfleet-rag", messages=[{"role": "user", "content": PAPER_QUESTION}], max_tokens=6, stream=True
    )
    first = next(iter(stream))
    assert first.model_extra["citations"]


def test_no_or_wrong_key_is_401_before_any_work(app):
    for key in ["wrong-key", API_KEY[:-1], RETIRED_KEY]:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{app[1]}/v1", api_key=key, max_retries=0).models.list()
    response = httpx.post(f"{app[1]}/v1/chat/completions", content=b"{not json")
    assert response.status_code == 401  # auth comes before parsing
    assert httpx.get(f"{app[1]}/healthz").status_code == 200


def test_limits_and_malformed_requests_are_clear_4xx(app, client):
    with pytest.raises(openai.BadRequestError, match="max_tokens 49 is above"):
        chat(client, "rayfleet-base", max_tokens=49)
    with pytest.raises(openai.BadRequestError, match="above this server's limit of 256"):
        chat(client, "rayfleet-base", "word " * 400)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    malformed = httpx.post(f"{app[1]}/v1/chat/completions", content=b"{not json", headers=headers)
    assert malformed.status_code in (400, 422) and "error" in malformed.json()
    missing = httpx.post(f"{app[1]}/v1/chat/completions", json={"model": "rayfleet-base"}, headers=headers)
    assert missing.status_code in (400, 422) and "messages" in missing.json()["error"]["message"]


def test_a_broken_path_falls_back_once_and_the_others_keep_working(client):
    raw = chat(client, "rayfleet-broken")
    assert raw.headers["x-rayfleet-path"] == "base" and raw.headers["x-rayfleet-fallback"] == "broken>base"
    assert "fault injection" in raw.headers["x-rayfleet-fallback-reason"]
    assert "paris" in raw.parse().choices[0].message.content.lower()
    started = time.monotonic()
    stuck = chat(client, "rayfleet-stuck", stream=False)
    assert (
        stuck.headers["x-rayfleet-fallback"] == "stuck>base"
        and "timeout" in stuck.headers["x-rayfleet-fallback-reason"]
    )
    assert 2 <= time.monotonic() - started < 30
    stream = client.chat.completions.with_raw_response.create(
        model="rayfleet-broken", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
    )
    assert stream.headers["x-rayfleet-fallback"] == "broken>base"
    assert chat(client, "rayfleet-rag", PAPER_QUESTION).headers["x-rayfleet-path"] == "rag"


def generation_counts() -> dict[str, int]:
    """The LLM deployment's generations: running, finished, failed, cancelled."""
    from ray import serve

    return serve.get_deployment_handle("LLMServer_default", app_name="rayfleet").generation_counts.remote().result()


def counts_once(condition, timeout_s: float = 30.0) -> dict[str, int]:
    """The generation counts once ``condition`` holds for them (or the last ones read)."""
    deadline = time.monotonic() + timeout_s
    while not condition(counts := generation_counts()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return counts


def test_a_path_past_its_timeout_stops_generating_while_its_fallback_answers(client):
    before = generation_counts()
    raw = chat(client, "rayfleet-hasty", LONG_PROMPT, max_tokens=48)
    assert raw.headers["x-rayfleet-fallback"] == "hasty>base" and "timeout" in raw.headers["x-rayfleet-fallback-reason"]
    assert raw.parse().usage.completion_tokens > 0
    after = counts_once(lambda counts: counts["running"] == 0)
    # Only the fallback's generation ran to its end: the timed-out one was aborted in vLLM (or never
    # reached it, when the cancel came first). Left running, it would have ended first, with the same answer.
    assert after["finished"] == before["finished"] + 1 and after["failed"] == before["failed"]
    assert after["cancelled"] - before["cancelled"] in (0, 1)


def test_a_client_gone_mid_stream_stops_its_generation(app):
    before = generation_counts()
    body = {"model": "rayfleet-base", "max_tokens": 48, "stream": True,
            "messages": [{"role": "user", "content": LONG_ANSWER}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", f"{app[1]}/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        next(line for line in response.iter_lines() if line.startswith("data: "))  # the first token: leave
    after = counts_once(lambda counts: counts["running"] == 0 and counts["cancelled"] > before["cancelled"])
    assert after["cancelled"] == before["cancelled"] + 1 and after["finished"] == before["finished"]
    # Counted as the client's leaving (499), not as an answer or a server error.
    left = 'rayfleet_requests_total{arm="none",path="base",status="499"}'
    deadline = time.monotonic() + 30
    while left not in (text := httpx.get(f"{app[1]}/metrics").text) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left in text and 'path="base",status="500"' not in text


def test_ab_split_is_sticky_per_user_and_follows_the_assignment(app, client):
    config = app[0]
    (test,) = config.ab_tests
    seen = {}
    for user in [f"user-{n}" for n in range(6)]:  # arms v1 v1 v1 v2 v2 v1
        arms = {
            chat(client, "rayfleet-finetuned", max_tokens=1, extra_headers={"x-user-id": user}).headers[
                "x-rayfleet-arm"
            ]
            for _ in range(2)
        }
        assert arms == {choose_arm(test, user).name}, user  # sticky, and the configured assignment
        seen[user] = arms.pop()
    assert set(seen.values()) == {"v1", "v2"}
    raw = chat(client, "rayfleet-finetuned", max_tokens=1, extra_headers={"x-user-id": "user-0"})
    assert raw.headers["x-rayfleet-adapter"] == ("qa@1" if seen["user-0"] == "v1" else "qa@2")


def test_overload_gets_503_with_retry_after_and_nothing_else_fails(app):
    async def one(http: httpx.AsyncClient):
        return await http.post(
            "/v1/chat/completions",
            json={
                "model": "rayfleet-base",
                "max_tokens": 24,
                "messages": [{"role": "user", "content": "Tell me a story."}],
            },
        )

    async def burst():
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=app[1], headers=headers, timeout=120) as http:
            return await asyncio.gather(*[one(http) for _ in range(20)])

    responses = asyncio.run(burst())
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 503}, statuses
    rejected = [response for response in responses if response.status_code == 503]
    assert all(response.headers["retry-after"] == "1" for response in rejected)
    assert rejected[0].json()["error"]["type"] == "overloaded_error"


def test_metrics_count_per_path_and_arm(app, client):
    chat(client, "rayfleet-broken")
    text = httpx.get(f"{app[1]}/metrics").text
    assert 'rayfleet_requests_total{arm="none",path="base",status="200"}' in text
    assert 'rayfleet_fallbacks_total{from_path="broken",to_path="base"}' in text
    assert 'arm="v1"' in text or 'arm="v2"' in text
    assert "rayfleet_time_to_first_token_seconds_bucket" in text and "rayfleet_completion_tokens_total" in text


def test_metrics_reach_rays_exporter_tagged_with_the_replica(app, client, ray_cluster):
    """Every ingress replica's figures in Ray's metrics, where the cluster's Prometheus sums the replicas."""
    import ray

    chat(client, "rayfleet-broken")
    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    series, deadline = [], time.monotonic() + 90  # Ray's agents report every few seconds
    while time.monotonic() < deadline and not series:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        series = [line for line in text.splitlines() if line.startswith("ray_rayfleet_fallbacks_total{")]
        time.sleep(2)
    assert series, "no rayfleet series on Ray's metrics export port"
    fallback = next(line for line in series if 'from_path="broken"' in line and 'to_path="base"' in line)
    assert 'deployment="OpenAIIngress"' in fallback and 'replica="' in fallback and 'application="rayfleet"' in fallback
    assert float(fallback.rsplit(" ", 1)[1]) >= 1
    assert "ray_rayfleet_requests_total{" in text and "ray_rayfleet_request_latency_seconds_bucket{" in text
    generations = [line for line in text.splitlines() if line.startswith("ray_rayfleet_llm_generations_total{")]
    assert any('deployment="LLMServer_default"' in line and 'outcome="finished"' in line for line in generations)


def test_request_logs_land_in_parquet_without_secrets(client, serve_artifacts):
    ids = {
        chat(client, "rayfleet-base", extra_headers={"x-user-id": "log-user"}).headers["x-rayfleet-request-id"],
        chat(client, "rayfleet-broken").headers["x-rayfleet-request-id"],
        chat(client, "rayfleet-finetuned", max_tokens=1, extra_headers={"x-user-id": "log-user"}).headers[
            "x-rayfleet-request-id"
        ],
    }
    routed = chat(client, "rayfleet", text="Which method does the paper propose?", max_tokens=1).headers[
        "x-rayfleet-request-id"
    ]
    ids.add(routed)
    several = chat(client, "rayfleet-base", max_tokens=3, n=2, temperature=1.0)
    ids.add(several.headers["x-rayfleet-request-id"])
    rows, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline and not ids <= {row["request_id"] for row in rows}:
        time.sleep(1)
        files = storage.list_parquet_files(serve_artifacts.logs) if storage.exists(serve_artifacts.logs) else []
        rows = [
            row
            for uri in files
            for row in pq.read_table(storage.resolve(uri).path, filesystem=storage.resolve(uri).filesystem).to_pylist()
        ]
    mine = {row["request_id"]: row for row in rows if row["request_id"] in ids}
    assert len(mine) == 5
    answers = mine.pop(several.headers["x-rayfleet-request-id"])
    assert len(answers["answer_tokens"]) == 2 and sum(answers["answer_tokens"]) == answers["completion_tokens"]
    assert answers["completion_tokens"] == several.parse().usage.completion_tokens
    assert mine[routed]["selected_by"] == "router" and len(mine[routed]["prompt_embedding"]) == 16  # for drift
    assert all(row["prompt_embedding"] is None for key, row in mine.items() if key != routed)
    assert -1.0 <= mine[routed]["relevance"] <= 1.0, "the relevance gate's score, for tuning its threshold"
    assert all(row["relevance"] is None for key, row in mine.items() if key != routed)
    assert {(row["path"], row["first_path"], row["fallback"]) for row in mine.values()} >= {
        ("base", "broken", True),
        ("base", "base", False),
    }
    assert {row["arm"] for row in mine.values()} & {"v1", "v2"}
    assert all(row["latency_ms"] > 0 and row["completion_tokens"] >= 1 for row in mine.values())
    assert API_KEY not in json.dumps(rows, default=str) and "log-user" not in json.dumps(rows, default=str)


def test_schemathesis_finds_no_server_errors(app):
    """Property-based requests generated from the app's OpenAPI schema never get a 5xx."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{app[1]}/openapi.json",
         "--checks", "not_a_server_error", "--header", f"Authorization: Bearer {API_KEY}",
         "--max-examples", "25", "--seed", "1", "--request-timeout", "120", "--phases", "examples,fuzzing"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert int(generated.group(1)) >= 20 and generated.group(1) == generated.group(2)  # cases really ran, all passed
