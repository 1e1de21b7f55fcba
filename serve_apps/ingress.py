"""The OpenAI-compatible ingress as a plain class (:class:`OpenAIServer`) and its HTTP app (:func:`build_http_app`).

Per request: API key (401 before anything else), body size (413 past ``max_body_bytes``, before
it is parsed), limits (400; a prompt far longer than the token limit is refused by its length in
characters, before it is tokenized), admission (503 + Retry-After past ``max_in_flight``),
target (``model``, else the router), A/B arm, then the target path, falling back along the
path's chain, each path once, when a path fails or goes quiet for its ``timeout_s`` (to its
first token, then between chunks: a long answer that keeps coming is never cut). Response
headers say what happened (``x-rayfleet-*``); metrics and request logs record it, and
``rayfleet_rejected`` counts the requests refused before any path was asked, by error code.

The Serve deployment (serve_apps.openai_app) passes the router and the paths as
callables over deployment handles; tests may pass any callables of the same shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import reprlib
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import AsyncIterator, Awaitable, Callable, Iterable, Sequence

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from transformers import AutoTokenizer

from rayfleet.assets import resolve_model
from rayfleet.config import problem_message
from rayfleet.engines.async_vllm import StreamSampling, TokenLogprob
from rayfleet.engines.templates import render_prompt_ids
from rayfleet.tables import utc_now
from schemas.openai_api import (
    FIELD_ERROR,
    LONE_SURROGATE_ERROR,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessage,
    ChatTokenLogprob,
    ChoiceLogprobs,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ErrorDetail,
    ErrorResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    TextChoice,
    TopLogprob,
    Usage,
    completion_id,
)
from serve_apps.auth import ApiKeyChecker
from serve_apps.config import ABTestConfig, ServeAppConfig
from serve_apps.errors import RequestError
from serve_apps.metrics import ServeMetrics
from serve_apps.paths import AdapterResolver, PathChunk, PathRequest
from serve_apps.request_log import RequestLogWriter
from serve_apps.router_server import RouteChoice
from serve_apps.targets import Target, UnknownModelError, choose_arm, parse_model, served_models

logger = logging.getLogger(__name__)

Route = Callable[[str], Awaitable[RouteChoice]]
CallPath = Callable[[PathRequest], AsyncIterator[PathChunk]]
NO_ARM = "none"
# A path's refusals that say it cannot serve the request, not that the request is wrong: when the server chose
# that path (the router, an A/B arm), its fallback answers instead of the client getting the refusal.
NOT_THIS_PATH = {"model_not_found", "unsupported_on_path"}
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away first: neither a server error nor an answer
CLIENT_CLOSED_REASON = "cancelled: the client closed the connection"


@dataclass
class Decision:
    """Where a request goes and why."""

    target: Target
    selected_by: str  # model | router | default (the router failed)
    confidence: float | None = None
    ab_test: str | None = None
    arm: str | None = None
    router_ms: float | None = None  # time the ingress waited for the router
    prompt_embedding: list[float] | None = None  # the router's projection, for drift monitoring
    relevance: float | None = None  # the best passage's score, when the router's relevance gate asked the index


@dataclass
class Outcome:
    """What answering one request did (metrics, log row, headers)."""

    endpoint: str
    model: str
    stream: bool
    prompt_sha256: str
    user_sha256: str | None
    decision: Decision | None = None
    path: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    adapter: str | None = None
    citations: list[dict] | None = None
    status: int = 200
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    prompt_tokens: int | None = None
    answers: int = 1  # n
    completion_tokens: int | None = None  # of every answer (n of them)
    answer_tokens: dict[int, int] = field(default_factory=dict)  # by answer index
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    finished: bool = False  # released and recorded (once, however the request ended)
    logprobs: bool = False  # whether log probabilities were asked for
    opened: set[int] = field(default_factory=set)  # the answers a stream has sent a chunk of
    echo: str | None = None  # a completion's prompt text, to answer before the continuation (``echo``)
    text_offsets: dict[int, int] = field(default_factory=dict)  # a streamed completion's token text sent, by answer

    def headers(self) -> dict[str, str]:
        decision = self.decision
        headers = {"x-rayfleet-request-id": self.request_id, "x-rayfleet-path": self.path or ""}
        headers["x-rayfleet-selected-by"] = decision.selected_by
        if decision.confidence is not None:
            headers["x-rayfleet-router-confidence"] = f"{decision.confidence:.4f}"
        if decision.router_ms is not None:
            headers["x-rayfleet-router-ms"] = f"{decision.router_ms:.2f}"
        if decision.relevance is not None:
            headers["x-rayfleet-relevance"] = f"{decision.relevance:.4f}"
        if decision.arm:
            headers["x-rayfleet-ab-test"], headers["x-rayfleet-arm"] = decision.ab_test, decision.arm
        if self.failures:
            headers["x-rayfleet-fallback"] = ">".join([name for name, _ in self.failures] + [self.path])
            headers["x-rayfleet-fallback-reason"] = "; ".join(f"{name}: {reason}" for name, reason in self.failures)
        if self.adapter:
            headers["x-rayfleet-adapter"] = self.adapter
        if self.citations:
            headers["x-rayfleet-citations"] = ",".join(
                f"{c['doc_id']}|{c['chunk_id']}|{'' if c['page'] is None else c['page']}" for c in self.citations
            )
        return headers

    def usage(self) -> Usage:
        prompt, completion = self.prompt_tokens or 0, self.completion_tokens or 0
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def as_request_error(error: BaseException) -> RequestError | None:
    """The client error inside ``error`` (Ray wraps errors raised in other replicas), if it is one."""
    for candidate in (error, getattr(error, "cause", None)):
        if isinstance(candidate, RequestError):
            return RequestError(candidate.status, candidate.message, candidate.code, candidate.param)
    return None


def failure_reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {str(cause).splitlines()[0][:160] if str(cause) else ''}"


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` stands for (its longest decoded token): a text
    of more than ``n`` times as many characters cannot be ``n`` tokens or fewer, whatever it says."""
    return max(len(tokenizer.decode([token_id])) for token_id in range(len(tokenizer)))


async def close_stream(stream: AsyncIterator[PathChunk]) -> None:
    """Stop a path's stream that will not be read to its end (a no-op on one that ended)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


class EventStream(StreamingResponse):
    """Server-sent events whose request is closed however the response ends. Starlette neither closes a
    body it stopped reading (the client left mid-stream) nor starts one whose client left before the
    first byte; either would hold the request's admission slot and its path's generation forever."""

    def __init__(self, events: AsyncIterator[str], when_sent: Callable[[], Awaitable[None]], headers: dict[str, str]):
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self.when_sent = when_sent

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()
                await self.when_sent()


class OpenAIServer:
    """Answers OpenAI API requests by routing them to answer paths."""

    def __init__(
        self, config: ServeAppConfig, route: Route, paths: dict[str, CallPath], metrics: ServeMetrics | None = None
    ):
        self.config = config
        self.route, self.paths = route, paths
        self.path_kinds = {name: path.kind for name, path in config.paths.items()}
        self.adapters = {
            name: AdapterResolver(path.registry) for name, path in config.paths.items() if path.kind == "finetuned"
        }
        self.keys = ApiKeyChecker(config.ingress.auth)
        self.metrics = metrics or ServeMetrics()
        self.request_log = RequestLogWriter(config.request_log)
        engine = config.engines[config.paths[config.router.default_path].engine].engine
        self.tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(engine.model)))
        # Twice the bound, so a tokenizer that drops characters (normalization) is never refused wrongly.
        self.max_prompt_chars = 2 * longest_token_chars(self.tokenizer) * config.ingress.limits.max_prompt_tokens
        self.in_flight = 0

    # -- the endpoints ----------------------------------------------------------------------

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=name) for name in served_models(self.path_kinds)])

    async def model(self, name: str) -> ModelCard:
        """One model of :meth:`models`, or a fine-tuned path's adapter version the registry holds
        (``rayfleet-finetuned:acme-qa@3``, as a request may pin it), by id; 404 for any other."""
        try:
            target = parse_model(name, self.path_kinds)
        except UnknownModelError as error:
            raise RequestError(404, str(error), "model_not_found", "model") from None
        if target is not None and target.adapter:
            await self.adapters[target.path].source(target.adapter)  # 404 when the registry holds no such version
        return ModelCard(id=name)

    async def chat(self, body: ChatCompletionRequest, headers) -> Response:
        conversation = [message.turn() for message in body.messages]
        with self.refusals():
            self.check_prompt_chars(sum(len(turn["content"]) for turn in conversation), "messages")
            self.check_prompt(len(render_prompt_ids(self.tokenizer, conversation)), "messages")
            field_name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            sampling = self.sampling(body, body.max_completion_tokens or body.max_tokens, field_name)
            if body.response_format is not None:
                sampling = sampling.model_copy(update=body.response_format.constraint())
            request = PathRequest(sampling, conversation=conversation)
        return await self.answer("chat.completions", body, request, headers)

    async def complete(self, body: CompletionRequest, headers) -> Response:
        with self.refusals():
            prompts = body.prompts()
            sampling = self.sampling(body, body.max_tokens, prompts=len(prompts))
            if body.echo and sampling.logprobs is not None:
                sampling = sampling.model_copy(update={"prompt_logprobs": sampling.logprobs})
            requests = [self.prompt_request(prompt, sampling) for prompt in prompts]
        echoes = [request.prompt if body.echo else None for request in requests]
        if len(requests) > 1:
            return await self.answer_prompts(body, requests, headers, echoes)
        return await self.answer("completions", body, requests[0], headers, echoes[0])

    def prompt_request(self, prompt: str | list[int], sampling: StreamSampling) -> PathRequest:
        """One prompt of a completion (text, or token ids read as their text too), checked against the limits."""
        if isinstance(prompt, str):
            self.check_prompt_chars(len(prompt), "prompt")
            self.check_prompt(len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]), "prompt")
            return PathRequest(sampling, prompt=prompt)
        self.check_prompt(len(prompt), "prompt")
        self.check_token_ids(prompt, "prompt")
        return PathRequest(sampling, prompt=self.tokenizer.decode(prompt), prompt_ids=prompt)

    # -- one request --------------------------------------------------------------------------

    @contextmanager
    def refusals(self):
        """Counts the requests refused inside (checks before any path is asked) in ``rayfleet_rejected``, by
        error code (``server_error`` for a bug)."""
        try:
            yield
        except RequestError as error:
            self.metrics.rejected(error.code or str(error.status))
            raise
        except Exception:
            self.metrics.rejected("server_error")
            raise

    def sampling(
        self, body: SamplingFields, max_tokens: int | None, field_name: str = "max_tokens", prompts: int = 1
    ) -> StreamSampling:
        limits = self.config.ingress.limits
        max_tokens = max_tokens or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            message = f"{field_name} {max_tokens} is above this server's limit of {limits.max_tokens}"
            raise RequestError(400, message, "max_tokens_too_large", field_name)
        greedy = body.top_p == 0  # OpenAI's top_p 0 keeps only the likeliest token; vLLM wants top_p > 0
        return StreamSampling(**self.config.sampling.model_dump() | dict(
            max_tokens=max_tokens, temperature=0.0 if greedy else body.temperature, top_p=1.0 if greedy else body.top_p,
            stop=body.stop, presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
            seed=body.seed,  # none: each request samples afresh (SamplingConfig's 0 is for reproducible batch jobs)
            logprobs=body.logprobs_asked(), logit_bias=self.token_biases(body), n=self.answers(body, greedy, prompts),
        ))  # fmt: skip

    def answers(self, body: SamplingFields, greedy: bool, prompts: int = 1) -> int:
        """How many answers the request asks for of each prompt (``n``): 400 when all its prompts' answers are past
        ``max_choices``, or above 1 with greedy decoding."""
        n, limit = body.n or 1, self.config.ingress.limits.max_choices
        if n * prompts > limit:
            asked = f"n {n}" if prompts == 1 else f"{prompts} prompts of n {n} ask for {n * prompts} answers, which"
            raise RequestError(400, f"{asked} is above this server's limit of {limit}", "invalid_request",
                               "n" if prompts == 1 else "prompt")  # fmt: skip
        if prompts > 1 and body.stream:
            raise RequestError(400, "stream one prompt per request (a list of prompts is answered whole)",
                               "invalid_request", "stream")  # fmt: skip
        if n > 1 and (greedy or body.temperature == 0):
            message = (f"n {n} needs sampling: greedy decoding (temperature 0, this server's default, or top_p 0) "
                       "gives one answer n times; set temperature above 0")  # fmt: skip
            raise RequestError(400, message, "invalid_request", "n")
        return n

    def token_biases(self, body: SamplingFields) -> dict[int, float] | None:
        """The request's ``logit_bias`` by token id; 400 naming an id this model's vocabulary does not hold."""
        biases = body.token_biases_by_id()
        self.check_token_ids(biases or {}, "logit_bias")
        return biases

    def check_token_ids(self, token_ids: Iterable[int], field_name: str) -> None:
        """400 naming the ids this model's vocabulary does not hold."""
        vocabulary = len(self.tokenizer)
        unknown = sorted({token for token in token_ids if token >= vocabulary})
        if unknown:
            message = (f"{field_name}: token ids {reprlib.repr(unknown)} are not in this model's vocabulary "
                       f"(0 to {vocabulary - 1})")  # fmt: skip
            raise RequestError(400, message, "invalid_request", field_name)

    def check_prompt_chars(self, chars: int, field_name: str) -> None:
        """Refuses a prompt too long to be worth tokenizing (tokenizing runs on the replica's event loop)."""
        if chars > self.max_prompt_chars:
            limit = self.config.ingress.limits.max_prompt_tokens
            message = f"the prompt is {chars} characters, far above this server's limit of {limit} tokens"
            raise RequestError(400, message, "context_length_exceeded", field_name)

    def check_prompt(self, prompt_tokens: int, field_name: str) -> None:
        limit = self.config.ingress.limits.max_prompt_tokens
        if prompt_tokens > limit:
            message = f"the prompt is {prompt_tokens} tokens, above this server's limit of {limit}"
            raise RequestError(400, message, "context_length_exceeded", field_name)

    def admit(self, answers: int) -> None:
        """Takes ``answers`` of the ``max_in_flight`` slots (a request of n answers is n sequences in the engine);
        503 when they are not free (a request is admitted alone whatever its n)."""
        if self.in_flight and self.in_flight + answers > self.config.ingress.limits.max_in_flight:
            self.metrics.rejected("overload")
            raise RequestError(503, "the server is at capacity; retry shortly", "overloaded")
        self.in_flight += answers
        self.metrics.in_flight(self.in_flight)

    def release(self, answers: int) -> None:
        self.in_flight -= answers
        self.metrics.in_flight(self.in_flight)

    async def answer(
        self, endpoint: str, body: SamplingFields, request: PathRequest, headers, echo: str | None = None
    ) -> Response:
        if not body.stream:
            outcome, chunks = await self.whole_answer(endpoint, body, request, headers, echo)
            return JSONResponse(self.response_body(outcome, chunks).model_dump(mode="json"), headers=outcome.headers())
        outcome = self.admitted(endpoint, body, request, headers, echo)
        try:
            request = await self.decided(outcome, body, request, headers)
            first, rest = await self.open_stream(outcome, request)
        except BaseException as error:
            self.failed(outcome, error)
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = self.sse_events(outcome, first, rest, include_usage)
        return EventStream(events, partial(self.stream_sent, outcome, rest), outcome.headers())

    async def whole_answer(
        self, endpoint: str, body: SamplingFields, request: PathRequest, headers, echo: str | None = None
    ) -> tuple[Outcome, list[PathChunk]]:
        """One request answered to the end: what happened, and the chunks of its answers."""
        outcome = self.admitted(endpoint, body, request, headers, echo)
        try:
            request = await self.decided(outcome, body, request, headers)
            chunks = await self.run_to_end(outcome, request)
        except BaseException as error:
            self.failed(outcome, error)
            raise
        self.finish(outcome)
        return outcome, chunks

    async def answer_prompts(
        self, body: CompletionRequest, requests: list[PathRequest], headers, echoes: list[str | None]
    ) -> Response:
        """A completion of several prompts: each answered as a request of its own (admitted, routed, logged), all at
        once; its choices run prompt by prompt (index: prompt times n plus answer), usage adds up, and the headers
        are the first prompt's but ``x-rayfleet-request-id``, which lists every prompt's. One that fails fails all."""
        tasks = [asyncio.ensure_future(self.whole_answer("completions", body, request, headers, echo))
                 for request, echo in zip(requests, echoes)]  # fmt: skip
        try:
            answered = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        bodies = [self.response_body(outcome, chunks) for outcome, chunks in answered]
        n = requests[0].sampling.n
        choices = [choice.model_copy(update={"index": prompt * n + choice.index})
                   for prompt, answer in enumerate(bodies) for choice in answer.choices]  # fmt: skip
        usage = Usage(**{name: sum(getattr(answer.usage, name) for answer in bodies) for name in Usage.model_fields})
        citations = [citation for answer in bodies for citation in answer.citations or []] or None
        response = CompletionResponse(model=bodies[0].model, usage=usage, citations=citations, choices=choices)
        ids = ",".join(outcome.request_id for outcome, _ in answered)
        return JSONResponse(response.model_dump(mode="json"), headers=answered[0][0].headers() | {
            "x-rayfleet-request-id": ids})  # fmt: skip

    def admitted(self, endpoint: str, body: SamplingFields, request: PathRequest, headers, echo: str | None) -> Outcome:
        """A request taken in (its answers' admission slots held) and the record of what answering it does."""
        self.admit(request.sampling.n)
        user_id = self.user_of(body, headers)
        return Outcome(
            endpoint, body.model, body.stream,
            sha256_hex(prompt_identity(request)),
            sha256_hex(user_id) if user_id else None, answers=request.sampling.n,
            logprobs=request.sampling.logprobs is not None, echo=echo,
        )  # fmt: skip

    async def decided(self, outcome: Outcome, body: SamplingFields, request: PathRequest, headers) -> PathRequest:
        """Where the request goes (``model``, else the router; an A/B arm), and the request for that target."""
        outcome.decision = await self.decide(body.model, request.routing_text(), self.user_of(body, headers))
        return replace(request, adapter=outcome.decision.target.adapter)

    def user_of(self, body: SamplingFields, headers) -> str | None:
        return headers.get(self.config.ingress.user_header) or body.user

    def failed(self, outcome: Outcome, error: BaseException) -> None:
        self.finish(outcome, error)
        if isinstance(error, RequestError) and outcome.decision is not None:
            error.request_id = outcome.request_id  # its log row's id, in the error's headers

    async def decide(self, model: str, text: str, user_id: str | None) -> Decision:
        try:
            target = parse_model(model, self.path_kinds)
        except UnknownModelError as error:
            raise RequestError(404, str(error), "model_not_found", "model") from error
        decision = Decision(target, "model") if target else await self.routed(text)
        test = self.ab_test_for(decision.target)
        if test is not None:
            arm = choose_arm(test, user_id or uuid.uuid4().hex)
            decision.target = parse_model(arm.model, self.path_kinds)
            decision.ab_test, decision.arm = test.name, arm.name
        if decision.target.adapter:
            await self.check_adapter(decision.target)
        return decision

    async def check_adapter(self, target: Target) -> None:
        """404 for a pinned adapter version the registry does not hold, before a path is asked (its
        replica would refuse it the same way, with a traceback in its log); a registry that cannot be
        read within the path's ``timeout_s`` is left to the path, and its fallback."""
        try:
            await asyncio.wait_for(
                self.adapters[target.path].source(target.adapter), self.config.paths[target.path].timeout_s
            )
        except RequestError:
            raise
        except Exception as error:
            logger.warning("adapter %r not checked (%s): the path resolves it", target.adapter, failure_reason(error))

    async def routed(self, text: str) -> Decision:
        started = time.perf_counter()
        try:
            choice = await asyncio.wait_for(self.route(text), self.config.router.timeout_s)
        except Exception as error:  # a broken router must not take requests down
            logger.warning("router failed (%s): sending to %s", failure_reason(error), self.config.router.default_path)
            self.metrics.path_error("router", NO_ARM, failure_reason(error)[:60])
            return Decision(Target(self.config.router.default_path), "default")
        return Decision(Target(choice.path), "router", choice.confidence,
                        router_ms=(time.perf_counter() - started) * 1000,
                        prompt_embedding=choice.prompt_embedding, relevance=choice.relevance)  # fmt: skip

    def ab_test_for(self, target: Target) -> ABTestConfig | None:
        return next((test for test in self.config.ab_tests if test.applies_to == target.model), None)

    def chain(self, outcome: Outcome, request: PathRequest) -> list[tuple[str, PathRequest]]:
        """The target path, then its fallbacks (each once, without the target's adapter)."""
        first = outcome.decision.target.path
        return [(first, request)] + [
            (name, replace(request, adapter=None)) for name in self.config.paths[first].fallback
        ]

    async def next_chunk(self, path: str, chunks: AsyncIterator[PathChunk]) -> PathChunk:
        """The path's next chunk: TimeoutError past its ``timeout_s`` (the wait is cancelled, and with it the
        path's call), StopAsyncIteration after its last."""
        return await asyncio.wait_for(anext(chunks), self.config.paths[path].timeout_s)

    async def run_to_end(self, outcome: Outcome, request: PathRequest) -> list[PathChunk]:
        for path, path_request in self.chain(outcome, request):
            chunks = aiter(self.paths[path](path_request))
            try:
                return await self.collect(outcome, path, chunks)
            except Exception as error:
                await close_stream(chunks)
                self.path_failed(outcome, path, error)
        raise self.all_failed(outcome)

    async def collect(self, outcome: Outcome, path: str, chunks: AsyncIterator[PathChunk]) -> list[PathChunk]:
        collected = []
        while True:
            try:
                chunk = await self.next_chunk(path, chunks)
            except StopAsyncIteration:
                return collected
            self.note_chunk(outcome, path, chunk)
            collected.append(chunk)

    async def open_stream(self, outcome: Outcome, request: PathRequest) -> tuple[PathChunk, AsyncIterator[PathChunk]]:
        for path, path_request in self.chain(outcome, request):
            chunks = aiter(self.paths[path](path_request))
            try:
                first = await self.next_chunk(path, chunks)
            except Exception as error:
                await close_stream(chunks)
                self.path_failed(outcome, path, error)
                continue
            self.note_chunk(outcome, path, first)
            return first, chunks
        raise self.all_failed(outcome)

    def note_chunk(self, outcome: Outcome, path: str, chunk: PathChunk) -> None:
        if outcome.first_token_at is None:
            outcome.first_token_at = time.perf_counter()
        outcome.path = path
        outcome.adapter = outcome.adapter or chunk.adapter
        outcome.citations = outcome.citations or chunk.citations
        outcome.answer_tokens[chunk.index] = chunk.completion_tokens
        outcome.prompt_tokens, outcome.completion_tokens = chunk.prompt_tokens, sum(outcome.answer_tokens.values())

    def path_failed(self, outcome: Outcome, path: str, error: BaseException) -> None:
        client_error = as_request_error(error)
        # A path the server chose (router, A/B arm) that cannot serve the request (the fine-tuned path without a
        # default adapter, the RAG path asked to score an echoed prompt) is the server's choice, not the client's
        # mistake: its fallback answers. Every other client error stands.
        server_chose = outcome.decision.selected_by != "model"
        if client_error is not None and not (server_chose and client_error.code in NOT_THIS_PATH):
            raise client_error from None
        reason = failure_reason(error)
        logger.warning("path %s failed for request %s: %s", path, outcome.request_id, reason)
        self.metrics.path_error(path, outcome.decision.arm or NO_ARM, reason.split(":")[0])
        outcome.failures.append((path, reason))
        # What the failed path answered before it failed is not the answer's (its fallback's chunks are).
        outcome.first_token_at = outcome.adapter = outcome.citations = outcome.prompt_tokens = (
            outcome.completion_tokens
        ) = None
        outcome.answer_tokens = {}

    def all_failed(self, outcome: Outcome) -> RequestError:
        tried = "; ".join(f"{name}: {reason}" for name, reason in outcome.failures)
        return RequestError(503, f"no path could answer ({tried}); retry shortly", "paths_unavailable")

    async def sse_events(self, outcome: Outcome, first: PathChunk, rest: AsyncIterator[PathChunk], include_usage: bool):
        stream_id, created = (
            completion_id("chatcmpl" if outcome.endpoint == "chat.completions" else "cmpl"),
            int(time.time()),
        )
        try:
            if outcome.endpoint == "chat.completions" and outcome.answers > 1:
                # every answer's role first, in index order, as the openai client's stream helper expects
                for index in range(outcome.answers):
                    role = PathChunk("", first.prompt_tokens, 0, index=index)
                    yield self.sse_chunk(outcome, stream_id, created, role, opening=index == 0)
            yield self.sse_chunk(outcome, stream_id, created, first, opening=not outcome.opened)
            while True:
                try:
                    chunk = await self.next_chunk(outcome.path, rest)
                except StopAsyncIteration:
                    break
                self.note_chunk(outcome, outcome.path, chunk)
                yield self.sse_chunk(outcome, stream_id, created, chunk, opening=False)
            if include_usage:
                yield self.sse_usage(outcome, stream_id, created)
            yield "data: [DONE]\n\n"
        except Exception as error:  # mid-stream failure: the headers are gone, say it in the stream
            outcome.status, outcome.error = 500, failure_reason(error)
            self.metrics.path_error(outcome.path, outcome.decision.arm or NO_ARM, "stream")
            yield (
                "data: "
                f"{ErrorResponse(error=ErrorDetail(message=outcome.error, type='server_error')).model_dump_json()}"
                "\n\n"
            )
        except (asyncio.CancelledError, GeneratorExit):  # the client left mid-stream
            outcome.status, outcome.error = CLIENT_CLOSED, CLIENT_CLOSED_REASON
            raise
        finally:
            await close_stream(rest)  # a client gone mid-stream: the path stops generating
            self.finish(outcome)

    async def stream_sent(self, outcome: Outcome, rest: AsyncIterator[PathChunk]) -> None:
        """After a stream's response: one whose events never started (the client left before the first
        byte) is closed as the client's leaving."""
        if not outcome.finished:
            outcome.status, outcome.error = CLIENT_CLOSED, CLIENT_CLOSED_REASON
            await close_stream(rest)
            self.finish(outcome)

    def sse_chunk(self, outcome: Outcome, stream_id: str, created: int, chunk: PathChunk, opening: bool) -> str:
        """One event: a chunk of answer ``chunk.index`` (its first names the role; the stream's first, the
        citations)."""
        model, index = self.served_model(outcome), chunk.index
        citations = outcome.citations if opening else None
        if outcome.endpoint == "chat.completions":
            delta = ChatDelta(role=None if index in outcome.opened else "assistant", content=chunk.text)
            outcome.opened.add(index)
            logprobs = chat_logprobs(chunk.logprobs) if outcome.logprobs else None
            choice = ChatChunkChoice(index=index, delta=delta, finish_reason=chunk.finish_reason, logprobs=logprobs)
            body = ChatCompletionChunk(
                id=stream_id, created=created, model=model, citations=citations, choices=[choice]
            )
        else:
            text, tokens, logprobs = chunk.text, chunk.logprobs, None
            if outcome.echo is not None and index not in outcome.opened:  # the answer's first chunk: the prompt first
                text, tokens = outcome.echo + text, chunk.prompt_logprobs + tokens
            outcome.opened.add(index)
            if outcome.logprobs:
                offset = outcome.text_offsets.get(index, 0)
                logprobs = completion_logprobs(tokens, offset)
                outcome.text_offsets[index] = offset + sum(len(token.token) for token in tokens)
            choice = TextChoice(index=index, text=text, finish_reason=chunk.finish_reason, logprobs=logprobs)
            body = CompletionResponse(id=stream_id, created=created, model=model, citations=citations, choices=[choice])
        return f"data: {body.model_dump_json()}\n\n"

    def sse_usage(self, outcome: Outcome, stream_id: str, created: int) -> str:
        model = self.served_model(outcome)
        if outcome.endpoint == "chat.completions":
            body = ChatCompletionChunk(id=stream_id, created=created, model=model, choices=[], usage=outcome.usage())
        else:
            body = CompletionResponse(id=stream_id, created=created, model=model, choices=[], usage=outcome.usage())
        return f"data: {body.model_dump_json()}\n\n"

    def served_model(self, outcome: Outcome) -> str:
        target = Target(outcome.path, outcome.adapter if outcome.path == outcome.decision.target.path else None)
        return target.model

    def response_body(self, outcome: Outcome, chunks: list[PathChunk]) -> ChatCompletionResponse | CompletionResponse:
        """The whole answer: one choice per answer index, in index order."""
        indices = sorted({chunk.index for chunk in chunks}) or [0]
        choices = [self.whole_choice(outcome, index, [c for c in chunks if c.index == index]) for index in indices]
        body = ChatCompletionResponse if outcome.endpoint == "chat.completions" else CompletionResponse
        return body(model=self.served_model(outcome), usage=outcome.usage(), citations=outcome.citations,
                    choices=choices)  # fmt: skip

    @staticmethod
    def whole_choice(outcome: Outcome, index: int, chunks: list[PathChunk]) -> ChatChoice | TextChoice:
        """One answer from its chunks: the text as generated (the same text as the stream), after the prompt's
        when it is echoed."""
        text = "".join(chunk.text for chunk in chunks)
        finish_reason = next((chunk.finish_reason for chunk in reversed(chunks) if chunk.finish_reason), "stop")
        tokens = [token for chunk in chunks for token in chunk.logprobs]
        if outcome.endpoint == "chat.completions":
            logprobs = chat_logprobs(tokens) if outcome.logprobs else None
            message = ChatMessage(role="assistant", content=text)
            return ChatChoice(index=index, message=message, finish_reason=finish_reason, logprobs=logprobs)
        if outcome.echo is not None:
            text = outcome.echo + text
            tokens = [token for chunk in chunks for token in chunk.prompt_logprobs] + tokens
        logprobs = completion_logprobs(tokens, 0) if outcome.logprobs else None
        return TextChoice(index=index, text=text, finish_reason=finish_reason, logprobs=logprobs)

    # -- accounting -----------------------------------------------------------------------------

    def finish(self, outcome: Outcome, error: BaseException | None = None) -> None:
        """Release the admission slot and record the request (metrics, log row), once."""
        if outcome.finished:
            return
        outcome.finished = True
        self.release(outcome.answers)
        client_error = None if error is None else as_request_error(error)
        if isinstance(error, asyncio.CancelledError):  # Serve cancels a request whose client disconnected
            outcome.status, outcome.error = CLIENT_CLOSED, CLIENT_CLOSED_REASON
        elif error is not None:
            outcome.status = client_error.status if client_error else 500
            outcome.error = str(client_error) if client_error else failure_reason(error)
        if outcome.decision is None:  # refused before it was routed (unknown model): no path to count it under
            self.metrics.rejected((client_error and client_error.code) or outcome.error.split(":")[0])
            return
        path, arm = outcome.path or outcome.decision.target.path, outcome.decision.arm or NO_ARM
        latency = time.perf_counter() - outcome.started
        ttft = None if outcome.first_token_at is None else outcome.first_token_at - outcome.started
        self.metrics.request_done(
            path, arm, outcome.status, latency, ttft, outcome.prompt_tokens or 0, outcome.completion_tokens or 0
        )
        if outcome.failures and outcome.path:
            self.metrics.fallback(outcome.failures[0][0], outcome.path)
        self.request_log.add(self.log_row(outcome, latency))

    def log_row(self, outcome: Outcome, latency: float) -> dict:
        decision = outcome.decision
        return dict(
            request_id=outcome.request_id, created_at=utc_now(), endpoint=outcome.endpoint, model=outcome.model,
            path=outcome.path, first_path=decision.target.path, fallback=bool(outcome.failures and outcome.path),
            selected_by=decision.selected_by, router_confidence=decision.confidence, ab_test=decision.ab_test,
            arm=decision.arm, adapter=outcome.adapter, status=outcome.status, error=outcome.error,
            stream=outcome.stream, latency_ms=round(latency * 1000, 3),
            ttft_ms=None if outcome.first_token_at is None
            else round((outcome.first_token_at - outcome.started) * 1000, 3),
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
            answer_tokens=[outcome.answer_tokens[index] for index in sorted(outcome.answer_tokens)] or None,
            prompt_sha256=outcome.prompt_sha256, user_sha256=outcome.user_sha256,
            prompt_embedding=decision.prompt_embedding, relevance=decision.relevance,
        )  # fmt: skip


# -- HTTP ------------------------------------------------------------------------------------------


def prompt_identity(request: PathRequest) -> str:
    """What a request's prompt hash is taken of: the prompt as sent (its token ids, its text) or the conversation."""
    if request.prompt_ids is not None:
        return json.dumps(request.prompt_ids)
    return request.prompt if request.prompt is not None else json.dumps(request.conversation)


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    """A chat choice's ``logprobs``: one entry per token, with its likeliest alternatives."""

    def entry(text: str, logprob: float) -> dict:
        return dict(token=text, logprob=logprob, bytes=list(text.encode()))

    return ChoiceLogprobs(content=[
        ChatTokenLogprob(**entry(token.token, token.logprob),
                         top_logprobs=[TopLogprob(**entry(*alternative)) for alternative in token.top])
        for token in tokens
    ])  # fmt: skip


def completion_logprobs(tokens: Sequence[TokenLogprob], offset: int) -> CompletionLogprobs:
    """A completion choice's ``logprobs``, the tokens' text offsets counted from ``offset``; each place's
    ``top_logprobs`` holds the token chosen there too, as OpenAI's completions do (an echoed prompt's first
    token has no log probability: None for both)."""
    offsets = list(itertools.accumulate((len(token.token) for token in tokens), initial=offset))[:-1]
    return CompletionLogprobs(
        tokens=[token.token for token in tokens], token_logprobs=[token.logprob for token in tokens],
        top_logprobs=[None if token.logprob is None else dict(token.top) | {token.token: token.logprob}
                      for token in tokens],
        text_offset=offsets,
    )  # fmt: skip


def error_response(status: int, message: str, error_type: str, code: str | None = None, headers=None,
                   param: str | None = None) -> JSONResponse:  # fmt: skip
    body = ErrorResponse(error=ErrorDetail(message=message, type=error_type, code=code, param=param))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


UNION_BRANCH_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def field_location(location: tuple) -> str:
    """A validation error's location as the client wrote the field: pydantic adds the union branch it
    tried (``stop.str``, ``stop.list[str].0``), which is no field of the request."""
    return ".".join(
        str(part) for part in location
        if not (isinstance(part, str) and (part in UNION_BRANCH_TAGS or "[" in part or "-" in part))
    )  # fmt: skip


def invalid_field(error: RequestValidationError) -> str | None:
    """The request field the first problem is in (``messages.0.content``), for the error's ``param``; none
    for a body that is not JSON at all."""
    first = error.errors()[0] if error.errors() else {"loc": ()}
    location = first["loc"]
    if first.get("type") == "json_invalid":
        return None
    if first.get("type") in (LONE_SURROGATE_ERROR, FIELD_ERROR):
        return first["ctx"]["where"]
    return field_location(location[1:]) or None if len(location) > 1 and location[0] == "body" else None


def invalid_request_message(error: RequestValidationError) -> str:
    """What is wrong with a request, each problem at its field; a body that is not JSON said as such."""
    problems = error.errors()
    if problems and problems[0].get("type") == "json_invalid":
        reason, position = problems[0]["ctx"]["error"], problems[0]["loc"][-1]
        return f"invalid request: the body is not valid JSON ({reason} at character {position})"
    return "invalid request: " + "; ".join(
        f"{field_location(request_field(e['loc']))}: {problem_message(e)}" for e in problems
    )


def request_field(location: tuple) -> tuple:
    """A validation error's location in the request's body (FastAPI puts ``body`` before it)."""
    return location[1:] if location[:1] == ("body",) else location


def http_error(request: Request, error: HTTPException) -> RequestError:
    """The client error for what the web framework refuses itself: no such route (404), wrong method (405)."""
    where = f"{request.method} {request.url.path}"
    if error.status_code == 404:
        return RequestError(404, f"no such endpoint: {where} (see /docs for this server's endpoints)", "unknown_url")
    if error.status_code == 405:
        return RequestError(405, f"method not allowed: {where}", "method_not_allowed")
    if error.status_code == 400:  # bytes json.loads cannot decode: not UTF-8 (nor UTF-16/32), or a 5,000-digit number
        message = "invalid request: the body could not be read as JSON (it is not UTF-8 text, or a number is too long)"
        return RequestError(400, message, "invalid_request")
    return RequestError(error.status_code, str(error.detail), None)


def route_path(scope) -> str:
    """The path the app routes on: Serve's proxy serves an app under its ``route_prefix`` with the prefix
    still in ``path`` and named in ``root_path`` (as ASGI has it), so ``/api/v1/models`` is ``/v1/models``."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def is_api_request(scope) -> bool:
    """An HTTP request to the OpenAI API (/v1...), wherever the app is mounted."""
    return scope["type"] == "http" and route_path(scope).startswith("/v1")


class BodyLimitMiddleware:
    """Refuses a /v1 request body over ``max_body_bytes`` with 413 as soon as it is seen to be (by its
    Content-Length, else while it is read), before anything parses it; the app reads the body held here."""

    def __init__(self, app, server: OpenAIServer):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if not is_api_request(scope):
            await self.app(scope, receive, send)
            return
        limit = self.server.config.ingress.limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        body = None if declared.isdigit() and int(declared) > limit else await self.read_body(receive, limit)
        if body is None:
            self.server.metrics.rejected("request_too_large")
            message = f"the request body is larger than this server's limit of {limit} bytes"
            await error_response(413, message, "invalid_request_error", "request_too_large")(scope, receive, send)
            return
        await self.app(scope, self.replay(body, receive), send)

    @staticmethod
    async def read_body(receive, limit: int) -> list[dict] | None:
        """The body's messages as received, or None once they hold more than ``limit`` bytes."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > limit:
                return None
            if not message.get("more_body", False):
                return messages

    @staticmethod
    def replay(messages: list[dict], receive):
        async def replayed():
            return messages.pop(0) if messages else await receive()

        return replayed


class V1RequestMiddleware:
    """Reads every /v1 request body as JSON, whatever its Content-Type says (curl's ``-d`` sends
    ``application/x-www-form-urlencoded``, some clients send none, and this API takes nothing but JSON),
    and serves a /v1 path written with a trailing slash as the path itself (the framework answered
    ``/v1/chat/completions/`` with a 307 redirect, which clients that do not follow redirects report as an error)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if is_api_request(scope):
            routed = route_path(scope)
            path = scope["path"][: len(scope["path"]) - len(routed)] + routed.rstrip("/")
            scope = {**scope, "path": path, "raw_path": path.encode()}
            if scope["method"] == "POST":
                headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """Refuses /v1 requests without a valid key with 401, before the body is even read."""

    def __init__(self, app, server: OpenAIServer):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if is_api_request(scope):
            authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not self.server.keys.allows(authorization):
                self.server.metrics.rejected("auth")
                response = error_response(
                    401,
                    "missing or invalid API key (Authorization: Bearer <key>)",
                    "authentication_error",
                    "invalid_api_key",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "invalid request",
        401: "no or wrong API key",
        404: "unknown model or adapter",
        503: "overloaded; see Retry-After",
    }.items()
}


def build_http_app(server: OpenAIServer) -> FastAPI:
    """The FastAPI app over ``server``: the OpenAI routes, /healthz and /metrics."""
    app = FastAPI(
        title="rayfleet",
        version="0.1.0",
        description="OpenAI-compatible endpoint routed to fine-tuned, RAG and base paths.",
    )
    app.add_middleware(V1RequestMiddleware)  # added first, so it runs last, just before the routes
    app.add_middleware(BodyLimitMiddleware, server=server)
    app.add_middleware(ApiKeyMiddleware, server=server)  # added last, so it runs first: no key, no body read

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, error: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(server.config.ingress.limits.retry_after_s)} if error.status == 503 else {}
        if error.request_id:
            headers["x-rayfleet-request-id"] = error.request_id
        return error_response(error.status, error.message, error.error_type, error.code, headers or None, error.param)

    @app.exception_handler(HTTPException)
    async def framework_error(request: Request, error: HTTPException) -> JSONResponse:
        refused = http_error(request, error)
        if refused.code == "invalid_request":
            server.metrics.rejected("invalid_request")
        return error_response(refused.status, refused.message, refused.error_type, refused.code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        server.metrics.rejected("invalid_request")
        message = invalid_request_message(error)
        return error_response(400, message, "invalid_request_error", "invalid_request", param=invalid_field(error))

    @app.exception_handler(Exception)
    async def server_error(_request: Request, error: Exception) -> JSONResponse:
        """A bug: answered in OpenAI's error shape, without details (they are in the replica's log)."""
        return error_response(500, f"internal error ({type(error).__name__}); see the server log", "server_error")

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=ERROR_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await server.chat(body, request.headers)

    @app.post("/v1/completions", response_model=CompletionResponse, responses=ERROR_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        return await server.complete(body, request.headers)

    @app.get("/v1/models", response_model=ModelList, responses={401: ERROR_RESPONSES[401]})
    async def models() -> ModelList:
        return server.models()

    one_model_errors = {status: ERROR_RESPONSES[status] for status in (401, 404)}

    @app.get("/v1/models/{model}", response_model=ModelCard, responses=one_model_errors)
    async def model(model: str) -> ModelCard:
        return await server.model(model)

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # load balancers' probes send either
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return app
