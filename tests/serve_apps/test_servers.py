"""The serving app's plain classes without Ray: model names, A/B arms, keys, configs, logs, and the
ingress over in-process paths, driven by the official openai client through an ASGI transport.

The answering path here is the real BasePath over the real transformers engine (a tiny random
Llama); broken paths are the FaultInjectionPath. The LLM server's start-up refusal of LoRA on an int8
checkpoint on CPU is checked here too (and, slow, that it serves that checkpoint with LoRA off).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
import openai
import pyarrow.parquet as pq
import pytest
import torch
from ray.serve.schema import ServeDeploySchema

from rayfleet.config import read_yaml
from rayfleet.engines.async_vllm import TextDelta, TokenLogprob
from rayfleet.engines.base import EngineConfig, SamplingConfig
from rayfleet.engines.transformers_engine import TransformersEngine
from rayfleet.quantization import quantize_model
from rayfleet.quantization.lora import IncompatibleAdapterError
from schemas.openai_api import ChatCompletionRequest
from schemas.serving import REQUEST_LOG_SCHEMA
from serve_apps.auth import ApiKeyChecker
from serve_apps.config import (
    ABTestConfig,
    AuthConfig,
    LLMEngineConfig,
    RequestLogConfig,
    ServeAppConfig,
    ServeConfigFile,
)
from serve_apps.ingress import Decision, OpenAIServer, Outcome, build_http_app, chat_logprobs, completion_logprobs
from serve_apps.llm_server import LLMServer
from serve_apps.errors import RequestError
from serve_apps.paths import AdapterResolver, BasePath, FaultInjectionPath, FineTunedPath, PathChunk
from serve_apps.request_log import RequestLogWriter
from serve_apps.router_server import RouteChoice
from serve_apps.targets import Target, UnknownModelError, choose_arm, parse_model

REPO = Path(__file__).resolve().parents[2]
KINDS = {"base": "base", "finetuned": "finetuned", "rag": "rag"}


def test_model_names_parse_to_paths_and_adapters():
    assert parse_model("rayfleet", KINDS) is None
    assert parse_model("rayfleet-rag", KINDS) == Target("rag")
    assert parse_model("rayfleet-finetuned:qa@3", KINDS) == Target("finetuned", "qa@3")
    assert Target("finetuned", "qa@3").model == "rayfleet-finetuned:qa@3"
    for unknown in ["gpt-4o", "rayfleet-nope", "rayfleet-base:qa@1", "rayfleet-"]:
        with pytest.raises(UnknownModelError):
            parse_model(unknown, KINDS)


def test_ab_arms_follow_the_weights_and_stick_to_users():
    test = ABTestConfig.model_validate({"name": "t", "applies_to": "rayfleet-finetuned", "arms": [
        {"name": "a", "weight": 3, "model": "rayfleet-finetuned:qa@1"},
        {"name": "b", "weight": 1, "model": "rayfleet-base"}]})  # fmt: skip
    counts = Counter(choose_arm(test, f"user-{n}").name for n in range(20000))
    assert abs(counts["a"] / 20000 - 0.75) < 0.015
    assert all(choose_arm(test, f"user-{n}") == choose_arm(test, f"user-{n}") for n in range(100))
    other = test.model_copy(update={"name": "other"})
    moved = sum(choose_arm(test, f"u{n}").name != choose_arm(other, f"u{n}").name for n in range(2000))
    assert moved > 300  # each test splits users independently


def test_api_keys_from_environment_and_file(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\nfile-key\n")
    monkeypatch.setenv("RAYFLEET_API_KEYS", "env-one, env-two")
    checker = ApiKeyChecker(AuthConfig(keys_file=str(keys_file)))
    for key in ["env-one", "env-two", "file-key"]:
        assert checker.allows(f"Bearer {key}")
    for header in [None, "", "Bearer", "Bearer env-on", "Basic env-one", "env-one", "Bearer # comment"]:
        assert not checker.allows(header), header
    monkeypatch.delenv("RAYFLEET_API_KEYS")
    with pytest.raises(ValueError, match="no API keys"):
        ApiKeyChecker(AuthConfig())


def ab_test(name="t", applies_to="rayfleet-base", arm_model="rayfleet-broken", second_arm="b") -> dict:
    arms = [{"name": "a", "weight": 1, "model": arm_model}, {"name": second_arm, "weight": 1, "model": "rayfleet-base"}]
    return {"name": name, "applies_to": applies_to, "arms": arms}


def minimal_config(**changes) -> dict:
    config = {"paths": {"base": {"kind": "base"}, "broken": {"kind": "fault_injection", "fallback": ["base"]}}}
    config.update(changes)
    return config


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"paths": {"base": {"kind": "base", "engine": "gpu"}}}, "engine 'gpu'"),
        ({"paths": {"base": {"kind": "base", "fallback": ["rag"]}}}, "falls back to unknown"),
        ({"paths": {"base": {"kind": "base", "fallback": ["base"]}}}, "falls back to unknown or itself"),
        ({"router": {"default_path": "rag"}}, "router names paths that do not exist"),
        ({"router": {"relevance": {"index": "s3://bucket/index"}}}, r"paths that do not exist: \['rag'\]"),
        ({"paths": {"base": {"kind": "base"}, "rag": {"kind": "rag", "index": "x", "min_score": "auto"}}},
         "needs a fallback"),
        ({"router": {"relevance": {"index": "s3://bucket/index", "min_score": 1.5}}}, "less than or equal to 1"),
        ({"router": {"relevance": {"index": "s3://b/i", "relevant_label": "base"}}}, "are both 'base'"),
        ({"paths": {"base": {"kind": "base", "deployment": {"num_replicas": 2, "autoscaling": {}}}}}, "not both"),
        ({"paths": {"base": {"kind": "sql"}}}, "does not match any of the expected tags"),
        ({"paths": {"base": {"kind": "base", "timeout": 3}}}, "Extra inputs are not permitted"),
        ({"router": {"placement": "ingress", "deployment": {"num_cpus": 1}}}, "router.placement is ingress"),
        ({"ab_tests": [ab_test(arm_model="rayfleet-nosuch")]},
         r"ab_tests\[0\]\.arms\[0\]\.model: model 'rayfleet-nosuch' does not exist"),
        ({"ab_tests": [ab_test(arm_model="rayfleet")]}, r"arms\[0\]\.model: 'rayfleet' is the routed model"),
        ({"ab_tests": [ab_test(applies_to="rayfleet-fintuned")]}, r"ab_tests\[0\]\.applies_to: model 'rayfleet-fin"),
        ({"ab_tests": [ab_test(second_arm="a")]}, "names an arm twice"),
        ({"ab_tests": [ab_test(), ab_test(name="u")]}, "two ab_tests share a applies_to"),
        ({"ingress": {"limits": {"max_tokens": 32, "default_max_tokens": 48}}}, "default_max_tokens 48 is above"),
        ({"ingress": {"limits": {"max_prompt_tokens": 2000}}}, r"2000 \+ max_tokens 256 is above engine 'default'"),
    ],
)  # fmt: skip
def test_config_mistakes_fail_loudly(change, complaint):
    with pytest.raises(ValueError, match=complaint):
        ServeAppConfig.model_validate(minimal_config(**change))


def test_the_built_in_default_max_tokens_follows_a_lower_limit():
    limits = ServeAppConfig.model_validate(minimal_config(ingress={"limits": {"max_tokens": 16}})).ingress.limits
    assert (limits.max_tokens, limits.default_max_tokens) == (16, 16)


@pytest.mark.parametrize("path", sorted((REPO / "serve_apps" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_serve_config_files_are_valid_for_serve_and_build(path):
    from serve_apps.openai_app import build_app

    raw = read_yaml(path)
    ServeDeploySchema.model_validate(raw)  # Serve's own schema: serve deploy accepts the file
    application = ServeConfigFile.model_validate(raw).applications[0]
    built = build_app(application.args.model_dump(mode="json"))
    assert built._bound_deployment.name == "OpenAIIngress"
    ServeAppConfig.model_validate(built._bound_deployment.init_args[0])  # what the ingress replica validates again


@pytest.mark.parametrize("placement, router_deployment", [("deployment", "Router"), ("ingress", None)])
def test_router_placement_decides_whether_the_app_has_a_router_deployment(placement, router_deployment):
    from serve_apps.openai_app import build_app

    ingress = build_app(minimal_config(router={"placement": placement}))._bound_deployment
    router = ingress.init_args[1]  # the ingress builds its own RouterServer when it gets None
    assert (router and router._bound_deployment.name) == router_deployment


def test_gpu_config_puts_engines_on_gpus_and_lets_accelerator_paths_scale_to_zero():
    config = (
        ServeConfigFile.model_validate(read_yaml(REPO / "serve_apps/configs/gpu_cluster.yaml")).applications[0].args
    )
    for name, engine in config.engines.items():
        options = engine.deployment.serve_options()
        assert options["ray_actor_options"]["num_gpus"] == 1, name
    assert config.engines["adapters"].deployment.serve_options()["autoscaling_config"]["min_replicas"] == 0


def test_request_log_writes_batches_by_rows_and_age(tmp_path):
    writer = RequestLogWriter(RequestLogConfig(uri=str(tmp_path / "logs"), batch_rows=2, flush_seconds=0.2))
    row = dict(
        request_id="r1", created_at=datetime.now(timezone.utc),
        endpoint="chat.completions", model="rayfleet", path="base", first_path="base", fallback=False,
        selected_by="router", router_confidence=0.9, ab_test=None, arm=None, adapter=None, status=200, error=None,
        stream=False, latency_ms=12.5, ttft_ms=3.0, prompt_tokens=10, completion_tokens=4, prompt_sha256="ab",
        user_sha256=None,
    )  # fmt: skip
    writer.add(row)
    assert not writer.due()
    writer.add({**row, "request_id": "r2"})
    assert writer.due()
    uri = writer.flush()
    table = pq.read_table(uri)
    assert table.schema.equals(REQUEST_LOG_SCHEMA) and table["request_id"].to_pylist() == ["r1", "r2"]
    writer.add({**row, "request_id": "r3"})
    asyncio.run(asyncio.wait_for(run_until_written(writer), 5))
    assert len(list((tmp_path / "logs").rglob("*.parquet"))) == 2


async def run_until_written(writer: RequestLogWriter) -> None:
    task = asyncio.create_task(writer.run(poll_seconds=0.05))
    while writer.rows:
        await asyncio.sleep(0.05)
    task.cancel()


# -- the ingress over in-process paths -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_path) -> TransformersEngine:
    return TransformersEngine(str(tiny_llama_path), EngineConfig(kind="transformers"))


def transformers_generate(engine: TransformersEngine):
    """The transformers engine behind the LLM deployment's streaming signature (one delta per answer)."""

    async def generate(prompt_ids, sampling, adapter):
        [result] = await asyncio.to_thread(engine._generate_batch, [prompt_ids], sampling)
        yield TextDelta(result.text, result.prompt_tokens, result.completion_tokens, result.finish_reason)

    return generate


@pytest.fixture
def server(tiny_engine, tiny_llama_path, monkeypatch) -> OpenAIServer:
    monkeypatch.setenv("RAYFLEET_API_KEYS", "k1")
    config = ServeAppConfig.model_validate(minimal_config(
        paths={"base": {"kind": "base"}, "broken": {"kind": "fault_injection", "fallback": ["base"]},
               "lonely": {"kind": "fault_injection"}},
        ingress={"limits": {"max_tokens": 16, "max_prompt_tokens": 64, "max_in_flight": 2}},
    ))  # fmt: skip
    base = BasePath(config.paths["base"], str(tiny_llama_path), transformers_generate(tiny_engine))
    paths = {"base": base.stream, "broken": FaultInjectionPath(config.paths["broken"]).stream,
             "lonely": FaultInjectionPath(config.paths["lonely"]).stream}  # fmt: skip

    async def route(text: str) -> RouteChoice:
        return RouteChoice("broken" if "break" in text else "base", 0.8, "base", relevance=0.25)

    return OpenAIServer(config, route, paths)


def openai_client(server: OpenAIServer, key: str = "k1") -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=build_http_app(server))
    http = httpx.AsyncClient(transport=transport, base_url="http://app")
    return openai.AsyncOpenAI(base_url="http://app/v1", api_key=key, http_client=http, max_retries=0)


def ask(client, model="rayfleet", text="Hello there", **options):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=4, **options
    )


def test_ingress_routes_answers_and_reports_headers(server):
    async def scenario():
        client = openai_client(server)
        raw = await ask(client)
        assert raw.headers["x-rayfleet-path"] == "base" and raw.headers["x-rayfleet-router-confidence"] == "0.8000"
        assert 0 <= float(raw.headers["x-rayfleet-router-ms"]) < 1000
        assert raw.headers["x-rayfleet-relevance"] == "0.2500"
        completion = raw.parse()
        assert completion.usage.completion_tokens >= 1 and completion.model == "rayfleet-base"
        fallen = await ask(client, text="please break")
        assert fallen.headers["x-rayfleet-fallback"] == "broken>base"
        chunks = [chunk async for chunk in await client.chat.completions.create(
            model="rayfleet-base", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            stream=True)]  # fmt: skip
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

    asyncio.run(scenario())
    metrics = server.metrics.exposition().decode()
    assert 'rayfleet_fallbacks_total{from_path="broken",to_path="base"} 1.0' in metrics
    assert 'rayfleet_requests_total{arm="none",path="base",status="200"} 3.0' in metrics


def test_a_follow_up_is_routed_with_the_turn_it_follows(server):
    seen = []

    async def route(text: str) -> RouteChoice:
        seen.append(text)
        return RouteChoice("base", 0.8, "base")

    server.route = route
    thread = [
        {"role": "system", "content": "Answer from the handbook."},
        {"role": "user", "content": "Where is the boiler room key kept?"},
        {"role": "assistant", "content": "At the front desk of building C."},
        {"role": "user", "content": "And when does the desk close?"},
    ]

    async def scenario():
        client = openai_client(server)
        await client.chat.completions.create(model="rayfleet", messages=thread, max_tokens=2)
        await client.completions.create(model="rayfleet", prompt="Where is the key?", max_tokens=2)

    asyncio.run(scenario())
    assert seen == ["And when does the desk close?\nWhere is the boiler room key kept?", "Where is the key?"]


def test_ingress_refuses_clearly(server):
    async def scenario():
        client = openai_client(server)
        with pytest.raises(openai.AuthenticationError):
            await ask(openai_client(server, key="k2"))
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await ask(client, model="rayfleet-gpt")
        with pytest.raises(openai.BadRequestError, match="max_tokens 17 is above"):
            await client.chat.completions.create(
                model="rayfleet", messages=[{"role": "user", "content": "x"}], max_tokens=17
            )
        with pytest.raises(openai.BadRequestError, match="limit of 64"):
            await ask(client, text="word " * 100)
        with pytest.raises(openai.BadRequestError, match="messages"):
            await client.chat.completions.create(model="rayfleet", messages=[], max_tokens=2)
        with pytest.raises(openai.InternalServerError) as failed:  # every path of the chain failed: 503
            await ask(client, model="rayfleet-lonely")
        assert failed.value.status_code == 503 and failed.value.response.headers["retry-after"] == "1"
        server.in_flight = 1  # one answer in flight: a request for two more is over capacity (max_in_flight 2)
        with pytest.raises(openai.InternalServerError, match="capacity") as overloaded:
            await ask(client, n=2, temperature=1.0)
        assert overloaded.value.status_code == 503
        server.in_flight = 2  # two requests in flight already: the next one is over capacity
        with pytest.raises(openai.InternalServerError, match="capacity") as overloaded:
            await ask(client)
        assert overloaded.value.status_code == 503

    asyncio.run(scenario())
    assert server.in_flight == 2  # refusals hold no slot
    server.in_flight = 0
    server.admit(3)  # alone, a request for more answers than max_in_flight is admitted
    assert server.in_flight == 3
    server.release(3)


def test_ingress_reads_what_newer_clients_send_and_honours_stop(server):
    async def scenario():
        client = openai_client(server)
        as_parts = await client.chat.completions.create(model="rayfleet-base", max_tokens=4, messages=[
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                         {"type": "text", "text": "there"}]}])  # fmt: skip
        as_strings = await client.chat.completions.create(model="rayfleet-base", max_tokens=4, messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello\nthere"}])  # fmt: skip
        user_only = (await ask(client, model="rayfleet-base", text="Hello\nthere")).parse()
        assert as_parts.usage.prompt_tokens == as_strings.usage.prompt_tokens != user_only.usage.prompt_tokens
        assert as_parts.choices[0].message.content == as_strings.choices[0].message.content
        free = (await ask(client, model="rayfleet-base")).parse().choices[0].message.content
        stop = free.split()[1] if len(free.split()) > 1 else free[-2:]
        stopped = (await ask(client, model="rayfleet-base", stop=[stop])).parse().choices[0]
        assert stopped.message.content == free[: free.index(stop)].strip() and stopped.finish_reason == "stop"

    asyncio.run(scenario())


@pytest.mark.parametrize("options, complaint", [
    ({"n": 2}, "n 2 needs sampling: greedy decoding (temperature 0, this server's default, or top_p 0)"),
    ({"n": 2, "temperature": 1, "top_p": 0}, "n 2 needs sampling"),
    ({"n": 9, "temperature": 1}, "n 9 is above this server's limit of 8"),
    ({"n": 0, "temperature": 1}, "invalid request: n: Input should be greater than or equal to 1"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
     "not supported by this server: tools="),
    ({"top_logprobs": 3}, "top_logprobs needs logprobs: true"),
    ({"logit_bias": {"the": 5}}, "invalid request: logit_bias: keys are token ids written as text"),
    ({"logit_bias": {"5": 101}}, "invalid request: logit_bias: biases are within ±100; token 5 has 101"),
    ({"logit_bias": {"5": 1, "1000000000": -100}}, "logit_bias: token ids [1000000000] are not in this model's"),
    ({"logit_bias": {"9" * 5000: 1}}, "logit_bias: keys are token ids written as text"),
    ({"logit_bias": {"7": 1, "007": 2}}, "logit_bias: token 7 is given twice ('007')"),
    ({"logit_bias": {str(token): 1 for token in range(1025)}}, "logit_bias: at most 1024 tokens, got 1025"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs: Input should be less than or equal to 20"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": {
        "type": "object", "properties": {"population": {"type": "int"}}}}}},
     "invalid request: response_format.json_schema.schema: not a valid JSON Schema at properties.population.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format: type json_schema needs json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format.type: Input should be 'text', 'json_object' or"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4 stop sequences"),
    ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "1"}]}, "tool calling"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
     "a message with tool_calls is for tool calling"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
    ({"seed": 2**63}, "invalid request: seed: Input should be less than 9223372036854775808"),
    ({"seed": -1}, "invalid request: seed: Input should be greater than or equal to 0"),
    ({"stream_options": {"include_usage": True}}, "stream_options is only allowed when stream is true"),
    ({"function_call": {"name": "get_weather"}}, "not supported by this server: function_call="),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
     "not supported by this server: modalities=['text', 'audio']"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "not supported by this server: audio="),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "content part of type 'image_url'"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "a text part's text must be a string"),
    ({"messages": [{"role": "user", "content": []}]}, "a list of content parts must hold at least one"),
])  # fmt: skip
def test_requests_for_what_the_server_cannot_do_are_refused_by_name(server, options, complaint):
    request = {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4} | options

    async def scenario():
        with pytest.raises(openai.BadRequestError, match=re.escape(complaint)):
            await openai_client(server).chat.completions.create(**request)

    asyncio.run(scenario())
    assert "rayfleet_requests_total{" not in server.metrics.exposition().decode()  # no model work was done


@pytest.mark.parametrize("selected_by, falls_back", [("router", True), ("model", False)])
def test_a_path_that_cannot_serve_what_the_server_sent_it_hands_it_to_its_fallback(server, selected_by, falls_back):
    outcome = Outcome("completions", "rayfleet", False, "0" * 64, None, Decision(Target("rag"), selected_by))
    refusal = RequestError(400, "the RAG path answers from a prompt of its own", "unsupported_on_path", "echo")
    if falls_back:
        server.path_failed(outcome, "rag", refusal)
        assert outcome.failures == [("rag", "RequestError: the RAG path answers from a prompt of its own")]
    else:  # the client named the path: the refusal is theirs
        with pytest.raises(RequestError, match="a prompt of its own"):
            server.path_failed(outcome, "rag", refusal)


def test_logit_bias_takes_every_id_of_the_vocabulary_and_no_other(server):
    last = len(server.tokenizer) - 1

    async def scenario():
        client = openai_client(server)
        assert (await ask(client, logit_bias={str(last): 0})).parse().choices[0].message.content is not None
        with pytest.raises(openai.BadRequestError, match=rf"token ids \[{last + 1}\] are not in") as refused:
            await ask(client, logit_bias={str(last + 1): 0})
        assert refused.value.param == "logit_bias"

    asyncio.run(scenario())


def test_log_probabilities_take_openais_shapes():
    from openai.types import CompletionChoice
    from openai.types.chat.chat_completion import ChoiceLogprobs

    tokens = [TokenLogprob(" Paris", -0.25, ((" Paris", -0.25), (" Lyon", -2.0))), TokenLogprob("é", -3.0, ())]
    chat = ChoiceLogprobs.model_validate(chat_logprobs(tokens).model_dump())
    assert [(entry.token, entry.logprob, entry.bytes) for entry in chat.content] == [
        (" Paris", -0.25, list(b" Paris")), ("é", -3.0, [0xC3, 0xA9])]  # fmt: skip
    assert [(top.token, top.bytes) for top in chat.content[0].top_logprobs] == [(" Paris", list(b" Paris")),
                                                                               (" Lyon", list(b" Lyon"))]  # fmt: skip
    assert chat.content[1].top_logprobs == []
    # a streamed completion's second chunk counts its offsets on from the text sent before it
    logprobs = completion_logprobs(tokens, offset=10).model_dump()
    choice = CompletionChoice.model_validate({"index": 0, "text": " Parisé", "finish_reason": "length",
                                              "logprobs": logprobs})  # fmt: skip
    assert choice.logprobs.text_offset == [10, 16] and choice.logprobs.tokens == [" Paris", "é"]
    assert choice.logprobs.top_logprobs == [{" Paris": -0.25, " Lyon": -2.0}, {"é": -3.0}]  # the chosen one too


def test_completions_take_prompts_as_text_or_token_ids_and_echo_them(server):
    ids = server.tokenizer("Hello there", add_special_tokens=False)["input_ids"]

    async def scenario():
        client = openai_client(server)
        plain = await client.completions.create(model="rayfleet-base", prompt="Hello there", max_tokens=4)
        for same in (["Hello there"], ids, [ids]):
            one = await client.completions.create(model="rayfleet-base", prompt=same, max_tokens=4)
            assert one.choices[0].text == plain.choices[0].text and one.usage.prompt_tokens == plain.usage.prompt_tokens
        split = server.tokenizer("Hel", add_special_tokens=False)["input_ids"] + server.tokenizer(
            "lo there", add_special_tokens=False)["input_ids"]  # fmt: skip
        as_sent = await client.completions.create(model="rayfleet-base", prompt=split, max_tokens=4)
        assert as_sent.usage.prompt_tokens == len(split) != len(ids)  # the ids as sent, not the text's own
        echoed = await client.completions.create(model="rayfleet-base", prompt=ids, max_tokens=4, echo=True)
        assert echoed.choices[0].text == "Hello there" + plain.choices[0].text
        streamed = [chunk.choices[0].text async for chunk in await client.completions.create(
            model="rayfleet-base", prompt="Hello there", max_tokens=4, echo=True, stream=True)]  # fmt: skip
        assert streamed[0].startswith("Hello there") and "".join(streamed) == echoed.choices[0].text
        morning = await client.completions.create(model="rayfleet-base", prompt="Good morning", max_tokens=4)
        raw = await client.completions.with_raw_response.create(
            model="rayfleet-base", prompt=[ids, "Good morning"], max_tokens=4, echo=True)  # fmt: skip
        several = raw.parse()
        assert [(choice.index, choice.text) for choice in several.choices] == [
            (0, echoed.choices[0].text), (1, "Good morning" + morning.choices[0].text)]  # fmt: skip
        assert several.usage.prompt_tokens == plain.usage.prompt_tokens + morning.usage.prompt_tokens
        assert len(raw.headers["x-rayfleet-request-id"].split(",")) == 2  # each prompt its own logged request
        with pytest.raises(openai.BadRequestError, match="stream one prompt per request"):
            await client.completions.create(model="rayfleet-base", prompt=["a", "b"], max_tokens=4, stream=True)
        with pytest.raises(openai.BadRequestError, match="9 prompts of n 1 ask for 9 answers, which is above"):
            await client.completions.create(model="rayfleet-base", prompt=[ids] * 9, max_tokens=4)
        with pytest.raises(openai.BadRequestError, match=r"prompt: token ids \[1000000\] are not in") as unknown:
            await client.completions.create(model="rayfleet-base", prompt=[*ids, 1000000], max_tokens=4)
        assert unknown.value.param == "prompt"

    asyncio.run(scenario())


def test_rayservice_serves_the_gpu_cluster_config():
    import yaml

    rayservice = yaml.safe_load((REPO / "cluster/kuberay/rayservice.yaml").read_text())
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert serve_config["applications"] == read_yaml(REPO / "serve_apps/configs/gpu_cluster.yaml")["applications"]


def test_a_missing_default_adapter_is_a_path_fault_but_a_missing_named_one_is_a_404(tmp_path, smollm2_path):
    from rayfleet.registry import Registry
    from serve_apps.config import FineTunedPathConfig
    from serve_apps.errors import RequestError
    from serve_apps.paths import DefaultAdapterUnavailable, FineTunedPath, PathRequest

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    Registry(str(tmp_path / "registry")).publish("acme-qa", str(adapter), {})
    config = FineTunedPathConfig(registry=str(tmp_path / "registry"), default_adapter="acme-qa@promoted")
    path = FineTunedPath(config, str(smollm2_path), generate=None)
    conversation = [{"role": "user", "content": "hi"}]

    with pytest.raises(DefaultAdapterUnavailable, match="no promoted version"):
        asyncio.run(path.adapter_for(PathRequest(None, conversation=conversation)))
    with pytest.raises(RequestError) as named:
        asyncio.run(path.adapter_for(PathRequest(None, conversation=conversation, adapter="acme-qa@7")))
    assert named.value.status == 404
    pinned = asyncio.run(path.adapter_for(PathRequest(None, conversation=conversation, adapter="acme-qa@1")))
    assert pinned.name == "acme-qa@1"


def test_a_routed_request_whose_fine_tuned_path_has_no_default_adapter_is_answered_by_its_fallback(
    tmp_path, tiny_engine, tiny_llama_path, monkeypatch
):
    """The client named no path and no adapter: a path the router chose that has none to use is the
    server's fault (fallback), while a client naming that path without an adapter is told to name one."""
    monkeypatch.setenv("RAYFLEET_API_KEYS", "k1")
    config = ServeAppConfig.model_validate(minimal_config(paths={
        "base": {"kind": "base"}, "finetuned": {"kind": "finetuned", "registry": str(tmp_path), "fallback": ["base"]}
    }))  # fmt: skip
    generate = transformers_generate(tiny_engine)
    paths = {"base": BasePath(config.paths["base"], str(tiny_llama_path), generate).stream,
             "finetuned": FineTunedPath(config.paths["finetuned"], str(tiny_llama_path), generate).stream}  # fmt: skip

    async def route(text: str) -> RouteChoice:
        return RouteChoice("finetuned", 0.9, "finetuned")

    server = OpenAIServer(config, route, paths)

    async def scenario():
        client = openai_client(server)
        routed = await ask(client)
        try:
            await ask(client, model="rayfleet-finetuned")
        except openai.NotFoundError as error:
            return routed, error
        return routed, None

    routed, named = asyncio.run(scenario())
    assert routed.headers["x-rayfleet-fallback"] == "finetuned>base"
    assert "name an adapter" in routed.headers["x-rayfleet-fallback-reason"]
    assert named is not None and "name an adapter" in named.message


def test_the_rag_path_answers_with_its_adapter_once_one_is_promoted(
    tmp_path, tiny_engine, tiny_llama_path, acl_chunks, monkeypatch
):
    import serve_apps.paths
    from rayfleet.registry import Registry
    from serve_apps.config import RagPathConfig
    from serve_apps.paths import PathRequest, RagPath
    from tests.serve_apps.conftest import build_index

    build_index(acl_chunks[:12], str(tmp_path / "index"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    registry = Registry(str(tmp_path / "registry"))
    registry.publish("acme-qa", str(adapter), {})
    engine_saw = []
    generate = transformers_generate(tiny_engine)

    def recording_generate(prompt_ids, sampling, adapter):
        engine_saw.append(adapter.name if adapter else None)
        return generate(prompt_ids, sampling, adapter)

    config = RagPathConfig(
        index=str(tmp_path / "index"), registry=str(tmp_path / "registry"), adapter="acme-qa@promoted", top_k=2
    )
    path = RagPath(config, str(tiny_llama_path), recording_generate)
    request = PathRequest(
        SamplingConfig(max_tokens=2), conversation=[{"role": "user", "content": acl_chunks[0]["text"][:200]}]
    )

    async def first_chunk():
        return [chunk async for chunk in path.stream(request)][0]

    before = asyncio.run(first_chunk())  # nothing promoted yet: the base model answers, still grounded
    assert before.adapter is None and before.citations and engine_saw == [None]
    registry.promote("acme-qa", 1, {"reason": "test"})
    monkeypatch.setattr(serve_apps.paths, "MOVING_SELECTORS_TTL_S", 0.0)  # no reuse of the earlier resolution
    after = asyncio.run(first_chunk())
    assert after.adapter == "acme-qa@1" and engine_saw == [None, "acme-qa@1"]
    assert acl_chunks[0]["chunk_id"] in {citation["chunk_id"] for citation in after.citations}
    with pytest.raises(ValueError, match="needs `registry`"):
        RagPathConfig(index="x", adapter="acme-qa@promoted")


def test_the_rag_path_starts_before_any_index_and_hands_requests_to_its_fallback(
    tmp_path, tiny_engine, tiny_llama_path
):
    from serve_apps.config import RagPathConfig
    from serve_apps.paths import IndexNotReady, PathRequest, RagPath

    path = RagPath(
        RagPathConfig(index=str(tmp_path / "index")), str(tiny_llama_path), transformers_generate(tiny_engine)
    )
    request = PathRequest(SamplingConfig(max_tokens=2), conversation=[{"role": "user", "content": "Which corpus?"}])
    with pytest.raises(IndexNotReady, match="no index version at .*index yet"):
        asyncio.run(
            anext(path.stream(request))
        )  # not a RequestError: the ingress falls back instead of failing the client


def test_the_rag_path_with_min_score_uses_only_passages_that_reach_it(
    tmp_path, tiny_engine, tiny_llama_path, acl_chunks
):
    from serve_apps.config import RagPathConfig
    from serve_apps.paths import NoRelevantPassages, PathRequest, RagPath
    from tests.serve_apps.conftest import build_index

    build_index(acl_chunks, str(tmp_path / "index"))
    config = RagPathConfig(index=str(tmp_path / "index"), min_score="auto", top_k=3, fallback=["base"])
    path = RagPath(config, str(tiny_llama_path), transformers_generate(tiny_engine))

    def ask(text: str):
        request = PathRequest(SamplingConfig(max_tokens=2), conversation=[{"role": "user", "content": text}])
        return asyncio.run(anext(path.stream(request)))

    threshold = path.thresholds.of(path.index.current())
    cited = ask(acl_chunks[5]["text"][:300]).citations
    assert cited[0]["chunk_id"] == acl_chunks[5]["chunk_id"] and all(c["score"] >= threshold for c in cited)
    with pytest.raises(NoRelevantPassages, match=f"no passage reaches min_score {threshold:.3f}"):
        ask("Write a short story about a dragon who loves tea.")  # not a RequestError: the fallback answers
    unfiltered = RagPath(
        config.model_copy(update={"min_score": None}), str(tiny_llama_path), transformers_generate(tiny_engine)
    )
    request = PathRequest(
        SamplingConfig(max_tokens=2), conversation=[{"role": "user", "content": "Write a short story."}]
    )
    assert len(asyncio.run(anext(unfiltered.stream(request))).citations) >= 1, "without min_score the top_k are used"


def test_the_rag_path_keeps_a_chats_thread_and_searches_a_follow_up_with_its_subject(
    tmp_path, tiny_engine, tiny_llama_path, acl_chunks
):
    from serve_apps.config import RagPathConfig
    from serve_apps.paths import PathRequest, RagPath
    from tests.serve_apps.conftest import build_index

    papers = sorted({chunk["doc_id"] for chunk in acl_chunks})[:4]
    build_index([chunk for chunk in acl_chunks if chunk["doc_id"] in papers], str(tmp_path / "index"))
    subject = next(chunk for chunk in acl_chunks if chunk["doc_id"] == papers[2] and chunk["ordinal"] == 1)
    prompts = []
    generate = transformers_generate(tiny_engine)

    def recording_generate(prompt_ids, sampling, adapter):
        prompts.append(tiny_engine.tokenizer.decode(prompt_ids))
        return generate(prompt_ids, sampling, adapter)

    config = RagPathConfig(index=str(tmp_path / "index"), top_k=1, system_prompt="You are the lab's assistant.")
    path = RagPath(config, str(tiny_llama_path), recording_generate)
    chat = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": subject["text"][:300]},
        {"role": "assistant", "content": "That passage is about parsing."},
        {"role": "user", "content": "Say more about it?"},
    ]

    async def citations(conversation):
        request = PathRequest(SamplingConfig(max_tokens=2), conversation=conversation)
        return [chunk async for chunk in path.stream(request)][0].citations

    assert asyncio.run(citations(chat))[0]["doc_id"] == papers[2], "the follow-up is searched with the turn before"
    prompt = prompts[-1]
    for kept in ("You are the lab's assistant.", "Answer in one sentence.", "That passage is about parsing.",
                 "Question: Say more about it?"):  # fmt: skip
        assert prompt.count(kept) == 1, kept
    assert prompt.index("That passage is about parsing.") < prompt.index("Context:"), "the thread comes first"

    alone = RagPath(config.model_copy(update={"max_history_tokens": 0}), str(tiny_llama_path), recording_generate)
    asyncio.run(anext(alone.stream(PathRequest(SamplingConfig(max_tokens=2), conversation=chat))))
    assert "That passage is about parsing." not in prompts[-1] and "Answer in one sentence." in prompts[-1]


def test_a_follow_up_is_routed_by_its_question_even_after_a_long_turn():
    from serve_apps.paths import PathRequest

    chat = [{"role": "user", "content": "Here is our maintenance log from last year. " * 80},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "When does the office close?"}]  # fmt: skip
    text = PathRequest(SamplingConfig(max_tokens=2), conversation=chat).routing_text()
    assert text.startswith("When does the office close?\n") and len(text.split()) < 80


def test_the_whole_rag_prompt_fits_the_engine_context(tmp_path, tiny_engine, tiny_llama_path, acl_chunks):
    from serve_apps.config import RagPathConfig
    from serve_apps.paths import PathRequest, RagPath
    from tests.serve_apps.conftest import build_index

    build_index(acl_chunks[:12], str(tmp_path / "index"))
    prompts = []
    generate = transformers_generate(tiny_engine)

    def recording_generate(prompt_ids, sampling, adapter):
        prompts.append(tiny_engine.tokenizer.decode(prompt_ids))
        return generate(prompt_ids, sampling, adapter)

    context_length, max_tokens = 400, 50
    config = RagPathConfig(index=str(tmp_path / "index"), top_k=3)
    path = RagPath(config, str(tiny_llama_path), recording_generate, context_length)

    def ask(chat):
        return asyncio.run(anext(path.stream(PathRequest(SamplingConfig(max_tokens=max_tokens), conversation=chat))))

    question = {"role": "user", "content": acl_chunks[3]["text"][:120]}
    short_chat = [{"role": "user", "content": "About the parsing paper."}, {"role": "assistant", "content": "Yes."},
                  question]  # fmt: skip
    long_chat = [{"role": "user", "content": "background " * 300}, {"role": "assistant", "content": "Noted."}, question]
    for chat, history_kept in ((short_chat, True), (long_chat, False)):
        first = ask(chat)
        assert first.citations and first.prompt_tokens + max_tokens <= context_length
        assert ("About the parsing paper." in prompts[-1] or "background" in prompts[-1]) == history_kept
        assert f"[1] ({first.citations[0]['title']}" in prompts[-1], "the label counts and stays"

    with pytest.raises(RequestError, match="leaving .* for retrieved passages.*context is 400 tokens") as refused:
        ask([{"role": "user", "content": "why " * 400 + "?"}])
    assert (refused.value.status, refused.value.code) == (400, "context_length_exceeded")


def test_the_rag_path_cites_a_passage_indexed_twice_once(tmp_path, tiny_engine, tiny_llama_path, acl_chunks):
    from serve_apps.config import RagPathConfig
    from serve_apps.paths import PathRequest, RagPath
    from tests.serve_apps.conftest import build_index

    original = acl_chunks[5]
    copy = {**original, "chunk_id": "copy-0", "doc_id": "copy", "source": "s3://b/paper (copy).pdf"}
    build_index(acl_chunks[:12] + [copy], str(tmp_path / "index"))
    config = RagPathConfig(index=str(tmp_path / "index"), top_k=3)
    path = RagPath(config, str(tiny_llama_path), transformers_generate(tiny_engine))
    question = [{"role": "user", "content": original["text"][:300]}]
    request = PathRequest(SamplingConfig(max_tokens=2), conversation=question)
    citations = asyncio.run(anext(path.stream(request))).citations
    assert len(citations) == 3 and citations[0]["chunk_id"] in {original["chunk_id"], "copy-0"}
    assert {original["chunk_id"], "copy-0"} - {citation["chunk_id"] for citation in citations}, "one copy only"


def test_the_app_gives_the_rag_path_its_engines_context_length():
    from serve_apps.openai_app import build_app

    config = minimal_config(paths={"base": {"kind": "base"}, "rag": {"kind": "rag", "index": "s3://b/index"}},
                            engines={"default": {"engine": {"kind": "vllm", "max_model_len": 1536}}})  # fmt: skip
    paths = build_app(config)._bound_deployment.init_args[2]
    assert paths["rag"]._bound_deployment.init_args[3] == 1536


def test_adapter_references_resolve_once_and_moving_ones_follow_the_registry(tmp_path, monkeypatch):
    from rayfleet.registry import Registry

    import serve_apps.paths as paths

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    registry = Registry(str(tmp_path / "registry"), kind="adapters")
    registry.publish("qa", str(folder), {})
    resolver = AdapterResolver(str(tmp_path / "registry"))

    numbered, latest = asyncio.run(resolver.source("qa@1")), asyncio.run(resolver.source("qa@latest"))
    assert (numbered.artifact.ref, latest.artifact.ref) == ("qa@1", "qa@1")
    registry.publish("qa", str(folder), {})
    assert asyncio.run(resolver.source("qa@latest")).artifact.ref == "qa@1"  # still fresh: no lookup
    monkeypatch.setattr(paths, "MOVING_SELECTORS_TTL_S", 0.0)
    assert asyncio.run(resolver.source("qa@latest")).artifact.ref == "qa@2"
    assert resolver.cached("qa@1") == numbered.artifact  # numbered versions never go stale
    with pytest.raises(RequestError) as refused:
        asyncio.run(resolver.source("qa@9"))
    assert refused.value.status == 404 and resolver.cached("qa@9") is None


# -- OpenAI compatibility: what the official API accepts, this server accepts the same way -----------


def http_client(server: OpenAIServer) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_http_app(server))
    return httpx.AsyncClient(transport=transport, base_url="http://app", headers={"Authorization": "Bearer k1"})


def test_answers_keep_the_text_as_generated_streamed_or_not(server):
    from serve_apps.ingress import Decision, Outcome
    from serve_apps.paths import PathChunk

    chunks = [PathChunk(" Paris", 5, 1), PathChunk(" is nice.\n", 5, 3, "stop")]  # as vLLM streams a continuation
    chat_text = lambda choice: (choice.get("message") or choice["delta"])["content"]  # noqa: E731
    for endpoint, text_of in (("chat.completions", chat_text), ("completions", lambda choice: choice["text"])):
        outcome = Outcome(endpoint, "rayfleet-base", False, "sha", None, Decision(Target("base"), "model"), path="base")
        whole = text_of(server.response_body(outcome, chunks).model_dump()["choices"][0])
        events = [server.sse_chunk(outcome, "id", 0, chunk, opening=False) for chunk in chunks]
        streamed = "".join(text_of(json.loads(event.removeprefix("data: "))["choices"][0]) for event in events)
        assert whole == streamed == " Paris is nice.\n", endpoint


def test_a_stream_the_client_leaves_stops_its_path(server):
    from serve_apps.ingress import Decision, Outcome
    from serve_apps.paths import PathChunk

    path_stopped = asyncio.Event()

    async def rest_of_answer():
        try:
            for n in range(1, 100):
                yield PathChunk(f" token{n}", 5, n + 1)
        finally:
            path_stopped.set()

    async def leave_after_two_events():
        decision = Decision(Target("base"), "model")
        outcome = Outcome("chat.completions", "rayfleet-base", True, "sha", None, decision, path="base")
        events = server.sse_events(outcome, PathChunk(" token0", 5, 1), rest_of_answer(), include_usage=False)
        received = [await anext(events), await anext(events)]
        await events.aclose()  # what the HTTP server does when the client goes away
        return received, path_stopped.is_set()

    received, stopped = asyncio.run(leave_after_two_events())
    assert " token0" in received[0] and " token1" in received[1]
    assert stopped  # at once, not when the abandoned generator is collected
    # Counted as the client's leaving, not as an answer (200) or a server error (500).
    assert 'rayfleet_requests_total{arm="none",path="base",status="499"} 1.0' in server.metrics.exposition().decode()


@pytest.mark.parametrize("asgi_spec", ["2.4", "2.3"])
def test_a_stream_whose_client_left_before_its_first_byte_frees_its_slot(server, asgi_spec):
    """Starlette never starts a body whose response could not begin (spec 2.4: the send raises; older
    servers: the disconnect wins the race), so the request is closed after the response instead."""
    path_stopped = asyncio.Event()

    async def base_path(request):
        try:
            for n in range(100):
                yield PathChunk(f" token{n}", 5, n + 1)
        finally:
            path_stopped.set()

    server.paths["base"] = base_path
    body = json.dumps(
        {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
    )
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": asgi_spec}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "server": ("app", 80), "client": ("127.0.0.1", 5000),
        "headers": [(b"authorization", b"Bearer k1"), (b"content-type", b"application/json")],
    }  # fmt: skip
    sent = []

    async def scenario():
        messages = iter([{"type": "http.request", "body": body.encode(), "more_body": False}])

        async def receive():
            return next(messages, {"type": "http.disconnect"})

        async def send(message):
            sent.append((message["type"], message.get("status")))
            if message["type"] == "http.response.start":
                await asyncio.sleep(0.05)  # the disconnect arrives while the headers go out
                raise OSError("connection reset by peer")

        try:
            await build_http_app(server)(scope, receive, send)
        except Exception:  # the server's report of the client's leaving; not what is checked
            pass
        return path_stopped.is_set()

    stopped = asyncio.run(scenario())
    assert sent == [("http.response.start", 200)]  # no event was sent
    assert server.in_flight == 0  # the slot is free again
    assert stopped  # the path stopped generating
    assert 'rayfleet_requests_total{arm="none",path="base",status="499"} 1.0' in server.metrics.exposition().decode()


def test_null_means_the_default_as_openai_reads_it(server):
    nulls = {name: None for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "stream", "seed")}
    request = {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4}

    async def scenario():
        async with http_client(server) as http:
            with_nulls = await http.post("/v1/chat/completions", json=request | nulls)
            without = await http.post("/v1/chat/completions", json=request)
            streamed = request | {"stream": True, "stream_options": {"include_usage": None}}
            usage_null = await http.post("/v1/chat/completions", json=streamed)
        return with_nulls, without, usage_null

    with_nulls, without, usage_null = asyncio.run(scenario())
    assert with_nulls.status_code == 200, with_nulls.text
    assert usage_null.status_code == 200 and '"usage":{' not in usage_null.text, usage_null.text[:300]
    assert with_nulls.json()["choices"] == without.json()["choices"]  # greedy, not streamed: the defaults
    assert server.sampling(ChatCompletionRequest.model_validate(request | nulls), 4) == server.sampling(
        ChatCompletionRequest.model_validate(request), 4
    )


def test_top_p_zero_is_greedy(server):
    body = ChatCompletionRequest.model_validate(
        {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1.5, "top_p": 0}
    )
    sampling = server.sampling(body, 4)
    assert (sampling.temperature, sampling.top_p) == (0.0, 1.0)  # vLLM refuses top_p 0

    async def scenario():
        client = openai_client(server)
        zero = (await ask(client, model="rayfleet-base", temperature=1.5, top_p=0)).parse()
        greedy = (await ask(client, model="rayfleet-base")).parse()
        return zero.choices[0].message.content, greedy.choices[0].message.content

    zero, greedy = asyncio.run(scenario())
    assert zero == greedy


def test_a_request_without_a_seed_samples_afresh_and_one_with_a_seed_keeps_it(server):
    from rayfleet.engines.vllm_engine import sampling_params

    def sampled(**fields):
        body = ChatCompletionRequest.model_validate(
            {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1.0} | fields
        )
        return sampling_params(server.sampling(body, 4))  # what the LLM server hands vLLM

    assert sampled().seed is None  # not the batch jobs' fixed seed 0: each request draws its own
    assert sampled(seed=7).seed == 7 and sampled(seed=2**63 - 1).seed == 2**63 - 1
    assert SamplingConfig().seed == 0  # batch jobs stay reproducible by default


def test_assistant_turns_without_content_read_as_empty(server):
    turns = [{"content": None}, {}, {"content": ""}, {"content": None, "refusal": "No.", "tool_calls": []}]

    async def scenario():
        client = openai_client(server)
        answers = []
        for turn in turns:
            thread = [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", **turn},
                {"role": "user", "content": "Hm?"},
            ]
            answers.append(await client.chat.completions.create(model="rayfleet-base", messages=thread, max_tokens=4))
        return answers

    answers = asyncio.run(scenario())
    assert len({answer.usage.prompt_tokens for answer in answers}) == 1  # the same prompt every time
    assert len({answer.choices[0].message.content for answer in answers}) == 1


def test_models_can_be_retrieved_one_by_one(server):
    async def scenario():
        client = openai_client(server)
        listed = {model.id: model for model in (await client.models.list()).data}
        retrieved = {name: await client.models.retrieve(name) for name in listed}
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.models.retrieve("gpt-4o")
        return listed, retrieved, unknown.value

    listed, retrieved, unknown = asyncio.run(scenario())
    assert retrieved == listed and "rayfleet-base" in retrieved
    assert unknown.code == "model_not_found" and "'gpt-4o' does not exist" in unknown.message


def test_a_pinned_adapter_version_is_checked_by_the_ingress_and_can_be_retrieved_as_a_model(
    tmp_path, tiny_llama_path, monkeypatch
):
    from rayfleet.registry import Registry

    monkeypatch.setenv("RAYFLEET_API_KEYS", "k1")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    Registry(str(tmp_path / "registry"), kind="adapters").publish("acme-qa", str(tmp_path / "adapter"), {})
    config = ServeAppConfig.model_validate(minimal_config(paths={
        "base": {"kind": "base"},
        "finetuned": {"kind": "finetuned", "registry": str(tmp_path / "registry")}}))  # fmt: skip

    async def route(text: str) -> RouteChoice:
        return RouteChoice("base", 1.0, "base")

    server = OpenAIServer(config, route, {})  # no path: a request that reached one would fail with 500

    async def scenario():
        client = openai_client(server)
        with pytest.raises(openai.NotFoundError, match="adapter 'acme-qa@7' not found"):
            await ask(client, model="rayfleet-finetuned:acme-qa@7")
        found = [(await client.models.retrieve(f"rayfleet-finetuned:acme-qa@{v}")).id for v in ("1", "latest")]
        refused = []
        for name in ("rayfleet-finetuned:acme-qa@2", "rayfleet-finetuned:other", "rayfleet-base:acme-qa@1"):
            with pytest.raises(openai.NotFoundError) as missing:
                await client.models.retrieve(name)
            refused.append(missing.value.message)
        return found, refused

    found, refused = asyncio.run(scenario())
    assert found == ["rayfleet-finetuned:acme-qa@1", "rayfleet-finetuned:acme-qa@latest"]
    assert "adapter 'acme-qa@2' not found" in refused[0] and "adapter 'other' not found" in refused[1]
    assert "path 'base' takes no adapter" in refused[2]
    assert rejected(server) == {"model_not_found": 1.0}


def test_unknown_endpoints_and_methods_answer_in_openais_error_shape(server):
    async def scenario():
        async with http_client(server) as http:
            return (await http.post("/v1/embeddings", json={"model": "rayfleet", "input": "a"}),
                    await http.get("/v1/chat/completions"), await http.get("/nowhere"))  # fmt: skip

    embeddings, wrong_method, nowhere = asyncio.run(scenario())
    for response, status in ((embeddings, 404), (wrong_method, 405), (nowhere, 404)):
        assert response.status_code == status
        body = response.json()
        assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    error = embeddings.json()["error"]
    assert error["type"] == "not_found_error" and "POST /v1/embeddings" in error["message"]
    assert wrong_method.json()["error"]["code"] == "method_not_allowed" and wrong_method.headers["allow"] == "POST"


def test_any_content_type_reads_as_json_a_trailing_slash_is_the_path_and_broken_json_is_said_as_such(server):
    body = json.dumps({"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})

    async def scenario():
        async with http_client(server) as http:
            as_curl_sends_it = await http.post(
                "/v1/chat/completions", content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
            without_type = await http.post("/v1/chat/completions", content=body)
            cut = await http.post(
                "/v1/chat/completions", content=body[:40], headers={"Content-Type": "application/json"}
            )
            slashed = await http.post("/v1/chat/completions/", content=body), await http.get("/v1/models/")
            latin1 = await http.post("/v1/chat/completions", content=body.replace("Hi", "Café").encode("latin-1"))
            return as_curl_sends_it, without_type, cut, await http.head("/healthz"), slashed, latin1

    as_curl_sends_it, without_type, cut, probe, slashed, latin1 = asyncio.run(scenario())
    assert latin1.status_code == 400 and latin1.json()["error"]["code"] == "invalid_request"
    assert "the body could not be read as JSON (it is not UTF-8 text" in latin1.json()["error"]["message"]
    assert as_curl_sends_it.status_code == without_type.status_code == 200, as_curl_sends_it.text
    assert [answer.status_code for answer in slashed] == [200, 200], "a trailing slash is the path, not a 307"
    assert as_curl_sends_it.json()["choices"][0]["message"]["role"] == "assistant"
    assert cut.status_code == 400 and cut.json()["error"]["param"] is None
    assert cut.json()["error"]["message"].startswith("invalid request: the body is not valid JSON (")
    assert probe.status_code == 200


def test_an_app_served_under_a_route_prefix_checks_keys_and_limits_as_at_the_root(server):
    """Serve's proxy hands an app mounted at ``route_prefix: /api`` the whole path and names the prefix
    in ``root_path``: the key, the body limit and the JSON reading hold there too."""
    body = json.dumps({"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    too_big = "x" * (server.config.ingress.limits.max_body_bytes + 1)

    async def scenario():
        transport = httpx.ASGITransport(app=build_http_app(server), root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            keyless = await http.get("/api/v1/models"), await http.post("/api/v1/chat/completions", content=body)
            keyed = {"Authorization": "Bearer k1"}
            oversized = await http.post("/api/v1/chat/completions", content=too_big, headers=keyed)
            as_curl_sends_it = await http.post(
                "/api/v1/chat/completions/", content=body,
                headers=keyed | {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
            return keyless, oversized, as_curl_sends_it, await http.get("/api/healthz")

    keyless, oversized, as_curl_sends_it, health = asyncio.run(scenario())
    assert [answer.status_code for answer in keyless] == [401, 401]
    assert keyless[1].json()["error"]["code"] == "invalid_api_key"
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "request_too_large"
    assert as_curl_sends_it.status_code == 200, as_curl_sends_it.text
    assert as_curl_sends_it.json()["choices"][0]["message"]["role"] == "assistant"
    assert health.status_code == 200


def test_a_request_no_path_could_answer_names_its_log_row(server):
    async def scenario():
        async with http_client(server) as http:
            chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            return (await http.post("/v1/chat/completions", json=chat | {"model": "rayfleet-lonely"}),
                    await http.post("/v1/chat/completions", json=chat | {"model": "rayfleet-gpt"}))  # fmt: skip

    unanswered, unknown = asyncio.run(scenario())
    assert unanswered.status_code == 503 and unanswered.json()["error"]["code"] == "paths_unavailable"
    assert re.fullmatch(r"[0-9a-f]{32}", unanswered.headers["x-rayfleet-request-id"])
    assert unanswered.headers["retry-after"]
    assert unknown.status_code == 404 and "x-rayfleet-request-id" not in unknown.headers  # refused unlogged


def rejected(server: OpenAIServer) -> dict[str, float]:
    """``rayfleet_rejected_total`` by reason."""
    found = re.findall(r'rayfleet_rejected_total\{reason="([^"]+)"\} ([0-9.]+)', server.metrics.exposition().decode())
    return {reason: float(count) for reason, count in found}


def test_refusals_name_the_field_and_are_counted_before_any_path_is_asked(server):
    chat = {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}

    async def scenario():
        async with http_client(server) as http:
            return [await http.post("/v1/chat/completions", json=chat | change) for change in (
                {"n": 2}, {"messages": [{"role": "user", "content": None}]}, {"max_tokens": 17},
                {"max_completion_tokens": 17}, {"model": "rayfleet-gpt"},
                {"messages": [{"role": "user", "content": "word " * 100}]}, {"stream_options": {"include_usage": 1}},
                {"stop": 5},
            )]  # fmt: skip

    answers = asyncio.run(scenario())
    assert [answer.status_code for answer in answers] == [400, 400, 400, 400, 404, 400, 400, 400]
    params = [answer.json()["error"]["param"] for answer in answers]
    assert params == [
        "n", "messages.0.content", "max_tokens", "max_completion_tokens", "model", "messages", "stream_options", "stop"
    ]  # fmt: skip
    assert answers[7].json()["error"]["message"].startswith("invalid request: stop: Input should be a valid")
    assert "max_completion_tokens 17 is above" in answers[3].json()["error"]["message"]
    assert rejected(server) == {
        "invalid_request": 4,
        "max_tokens_too_large": 2,
        "model_not_found": 1,
        "context_length_exceeded": 1,
    }
    assert "rayfleet_requests_total{" not in server.metrics.exposition().decode()


def test_text_with_a_lone_surrogate_is_refused_where_it_is(server):
    """JSON lets a client send half of a surrogate pair (a JS client that cut an emoji in half); the
    tokenizer and the engine cannot take it: 400 naming where, not a 500 or a failed path."""
    whole = (
        b'{"model": "rayfleet-base", "max_tokens": 4, "messages": [{"role": "user", "content": "ok \\ud83d\\ude00"}]}'
    )
    cut_content = whole.replace(b"\\ude00", b"")
    cut_part = (
        b'{"model": "rayfleet-base", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "text", '
        b'"text": "\\ud83d"}]}]}'
    )
    cut_stop = whole[:-1] + b', "stop": "\\ud83d"}'
    cut_prompt = b'{"model": "rayfleet-base", "max_tokens": 4, "prompt": "\\ud83d hi"}'

    async def scenario():
        async with http_client(server) as http:
            post = lambda path, body: http.post(path, content=body, headers={"content-type": "application/json"})  # noqa: E731
            return [await post("/v1/chat/completions", body) for body in (whole, cut_content, cut_part, cut_stop)] + [
                await post("/v1/completions", cut_prompt)
            ]

    answers = asyncio.run(scenario())
    assert answers[0].status_code == 200  # a whole pair is one character, an emoji
    for answer, where in zip(answers[1:], ["messages.0.content", "messages.0.content.0.text", "stop", "prompt"]):
        assert answer.status_code == 400, answer.text
        assert f"the text at {where} holds a lone UTF-16 surrogate" in answer.json()["error"]["message"]
        assert answer.json()["error"]["param"] == where
    assert rejected(server) == {"invalid_request": 4}


def test_a_small_body_nested_deep_is_a_400_not_a_500(server):
    """A 2 KB body nesting lists 800 deep in a field the server reads (JSON's parser takes ~1000 levels):
    the check every text field gets walked it by recursion and answered 500 (RecursionError)."""
    deep = "[" * 800 + "]" * 800
    chat = '{"model": "rayfleet-base", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi", "x": %s}]}'
    stop = '{"model": "rayfleet-base", "max_tokens": 4, "prompt": "Hi", "stop": %s}'

    async def scenario():
        async with http_client(server) as http:
            return [await http.post("/v1/chat/completions", content=chat % deep),
                    await http.post("/v1/completions", content=stop % deep),
                    await http.post("/v1/chat/completions", content=chat % '[["\\ud83d"]]')]  # fmt: skip

    in_a_message, in_stop, surrogate_inside = asyncio.run(scenario())
    assert in_a_message.status_code == 200, in_a_message.text  # a field this API does not know is ignored
    assert in_stop.status_code == 400 and in_stop.json()["error"]["param"] == "stop", in_stop.text
    assert surrogate_inside.json()["error"]["param"] == "messages.0.x.0.0", surrogate_inside.text


def test_a_body_over_the_limit_is_refused_before_it_is_parsed_and_a_huge_prompt_before_it_is_tokenized(server):
    limit = server.config.ingress.limits.max_body_bytes
    big = {"model": "rayfleet-base", "messages": [{"role": "user", "content": "x" * limit}]}

    async def chunks_of(body: bytes):
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async def scenario():
        async with http_client(server) as http:
            declared = await http.post("/v1/chat/completions", json=big)
            chunked = await http.post("/v1/chat/completions", content=chunks_of(json.dumps(big).encode()),
                                      headers={"content-type": "application/json"})  # fmt: skip
            huge_prompt = await http.post(
                "/v1/completions", json={"model": "rayfleet-base", "prompt": "x " * (limit // 4)}
            )
            fits = await http.post(
                "/v1/chat/completions", json=big | {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            )
            return declared, chunked, huge_prompt, fits

    declared, chunked, huge_prompt, fits = asyncio.run(scenario())
    for refused in (declared, chunked):
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    assert huge_prompt.status_code == 400
    assert (
        f"the prompt is {limit // 2} characters, far above this server's limit of 64 tokens"
        in huge_prompt.json()["error"]["message"]
    )
    assert fits.status_code == 200  # the body read ahead of the app reaches it whole
    assert rejected(server) == {"request_too_large": 2, "context_length_exceeded": 1}


def test_a_path_fails_when_it_goes_quiet_not_when_its_answer_is_long(tiny_engine, tiny_llama_path, monkeypatch):
    """``timeout_s`` bounds each wait for the next chunk: a path that answers steadily for longer than
    that answers; one that stops mid-answer falls back (not streamed) or ends its stream with an error."""
    monkeypatch.setenv("RAYFLEET_API_KEYS", "k1")
    config = ServeAppConfig.model_validate(minimal_config(paths={
        "base": {"kind": "base"}, "slow": {"kind": "base", "timeout_s": 0.5},
        "stalled": {"kind": "fault_injection", "mode": "stall", "timeout_s": 0.5, "fallback": ["base"]}}))  # fmt: skip

    async def slow_path(request):  # fault injection: 0.2 s per chunk, 1 s in all
        for n in range(5):
            await asyncio.sleep(0.2)
            yield PathChunk(f" word{n}", 3, n + 1, "length" if n == 4 else None)

    base = BasePath(config.paths["base"], str(tiny_llama_path), transformers_generate(tiny_engine))
    paths = {"base": base.stream, "slow": slow_path, "stalled": FaultInjectionPath(config.paths["stalled"]).stream}
    server = OpenAIServer(config, lambda text: None, paths)

    async def scenario():
        client = openai_client(server)
        slow = await ask(client, model="rayfleet-slow")
        stalled = await ask(client, model="rayfleet-stalled")
        async with http_client(server) as http:
            body = {"model": "rayfleet-stalled", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        return slow, stalled, events

    slow, stalled, events = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "x-rayfleet-fallback" not in slow.headers
    assert slow.parse().choices[0].message.content == " word0 word1 word2 word3 word4"
    assert (
        stalled.headers["x-rayfleet-fallback"] == "stalled>base"
        and stalled.headers["x-rayfleet-fallback-reason"] == "stalled: timeout"
    )
    answer = stalled.parse()
    assert "stalled" not in answer.choices[0].message.content and answer.model == "rayfleet-base"
    assert " stalled" in events[0] and json.loads(events[-1].removeprefix("data: "))["error"]["message"] == "timeout"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU vLLM applies LoRA to int8 checkpoints")
def test_the_llm_server_refuses_lora_on_an_int8_checkpoint_on_a_cpu_without_amx_before_vllm_starts(
    tmp_path, tiny_llama_path, monkeypatch
):
    monkeypatch.setattr("rayfleet.quantization.lora.cpu_has_amx", lambda: False)  # the CPUs where vLLM fails
    quantize_model(tiny_llama_path, tmp_path / "w8a8", "w8a8_int8")
    engine = EngineConfig(kind="vllm", model=str(tmp_path / "w8a8"), max_model_len=512, cpu_kv_cache_gib=1)
    config = LLMEngineConfig(engine=engine)
    assert config.max_loras == 4  # the default: LoRA on
    with pytest.raises(IncompatibleAdapterError, match="cannot apply LoRA to an int8") as refused:
        LLMServer(config)
    assert "Set max_loras: 0 on this engine" in str(refused.value)


@pytest.mark.slow
def test_the_llm_server_serves_an_int8_checkpoint_on_cpu_with_lora_off(tmp_path, smollm2_path):
    quantize_model(smollm2_path, tmp_path / "w8a8", "w8a8_int8")
    engine = EngineConfig(kind="vllm", model=str(tmp_path / "w8a8"), max_model_len=512, cpu_kv_cache_gib=1)
    server = LLMServer(LLMEngineConfig(engine=engine, max_loras=0))
    prompt_ids = server.engine.tokenizer("The capital of France is")["input_ids"]

    async def answer():
        return [delta async for delta in server.stream(prompt_ids, SamplingConfig(max_tokens=4))]

    try:
        deltas = asyncio.run(answer())
    finally:
        server.close()
    assert deltas[-1].finish_reason is not None and deltas[-1].completion_tokens > 0
