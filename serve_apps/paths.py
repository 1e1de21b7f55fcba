"""The answer paths as plain classes: base model, fine-tuned (LoRA from the registry), RAG, fault injection.

Each path turns a :class:`PathRequest` into prompt token ids and streams the answer from
an LLM engine through ``generate`` (in Serve: a handle to an LLM deployment; in tests:
any async generator function with the same signature), as :class:`PathChunk` objects.
The first chunk carries what the path decided (the adapter version, the citations).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Callable

from transformers import AutoTokenizer

from rayfleet.assets import resolve_model
from rayfleet.engines.async_vllm import StreamSampling, TextDelta, TokenLogprob
from rayfleet.engines.base import Conversation, SamplingConfig
from rayfleet.engines.templates import render_prompt_ids
from rayfleet.registry import ArtifactVersion, Registry, RegistryError
from rayfleet.retrieval.rag import (
    GroundedPrompt,
    PromptTooLong,
    chat_parts,
    citations_of,
    fit_grounded_prompt,
    fit_to_budget,
    grounded_conversation,
    recent_turns,
    retrieval_query,
)
from serve_apps.config import BasePathConfig, FaultInjectionPathConfig, FineTunedPathConfig, RagPathConfig
from serve_apps.errors import RequestError

if TYPE_CHECKING:
    from rayfleet.retrieval.retriever import Hit, Retriever

MOVING_SELECTORS_TTL_S = 30.0  # how long name@latest / name@promoted resolutions are reused

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PathRequest:
    """What a path is asked: a conversation (chat) or a raw prompt (completions), and sampling."""

    sampling: SamplingConfig
    conversation: Conversation | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None  # the prompt as the client sent it in token ids (``prompt`` is their text)
    adapter: str | None = None  # registry reference, fine-tuned paths only

    def routing_text(self) -> str:
        """The text to route with: the prompt, or a chat's question followed by the end of the user's turn
        before it, what the RAG path searches with (so a follow-up such as "and when does it close?" is
        routed with what it follows, not as a request of its own, and a long earlier turn never hides it)."""
        if self.prompt is not None:
            return self.prompt
        _, earlier, question = chat_parts(self.conversation)
        return retrieval_query(question, earlier)


@dataclass(frozen=True)
class AdapterSource:
    """A registry adapter version for the engine to load: where it lives and its LoRA id."""

    registry: str
    artifact: ArtifactVersion

    @property
    def name(self) -> str:
        return self.artifact.ref

    @property
    def lora_id(self) -> int:
        """A positive id that is the same for this version in every replica."""
        return int.from_bytes(hashlib.sha256(self.artifact.uri.encode()).digest()[:4], "big") % (2**31 - 1) + 1


@dataclass(frozen=True)
class PathChunk:
    """Part of an answer: new text, running token counts, and (first chunk) what the path used."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    adapter: str | None = None
    citations: list[dict] | None = field(default=None)
    logprobs: tuple[TokenLogprob, ...] = ()  # the chunk's tokens', when the request asked for them
    index: int = 0  # which of the request's n answers
    prompt_logprobs: tuple[TokenLogprob, ...] = ()  # the prompt's tokens', on each answer's first chunk, when asked


Generate = Callable[[list[int], SamplingConfig, AdapterSource | None], AsyncIterator[TextDelta]]


class GeneratingPath:
    """A path that renders a prompt and streams it from an engine."""

    def __init__(self, config, model: str, generate: Generate):
        self.config = config
        self.generate = generate
        self.tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(model)))

    def prompt_ids(self, request: PathRequest) -> list[int]:
        if request.prompt_ids is not None:
            return request.prompt_ids
        if request.prompt is not None:
            return self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
        system = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        return render_prompt_ids(self.tokenizer, system + list(request.conversation))

    async def stream(self, request: PathRequest) -> AsyncIterator[PathChunk]:
        adapter = await self.adapter_for(request)
        first = True
        async for delta in self.generate(self.prompt_ids(request), request.sampling, adapter):
            yield PathChunk(
                delta.text, delta.prompt_tokens, delta.completion_tokens, delta.finish_reason,
                adapter=adapter.name if adapter and first else None, logprobs=delta.logprobs, index=delta.index,
                prompt_logprobs=delta.prompt_logprobs,
            )  # fmt: skip
            first = False

    async def adapter_for(self, request: PathRequest) -> AdapterSource | None:
        if request.adapter:
            raise RequestError(404, f"path {self.config.kind!r} takes no adapter", "model_not_found", "model")
        return None


class BasePath(GeneratingPath):
    """The base model, as it is: the fallback of the other paths."""

    def __init__(self, config: BasePathConfig, model: str, generate: Generate):
        super().__init__(config, model, generate)


class IndexNotReady(RuntimeError):
    """The RAG path's index root holds no version yet (nothing ingested and indexed so far)."""


class NoRelevantPassages(RuntimeError):
    """No retrieved passage reaches the RAG path's ``min_score``: the documents do not cover the question."""


class DefaultAdapterUnavailable(RuntimeError):
    """The fine-tuned path's default adapter reference resolves to nothing (e.g. no version promoted yet)."""


class AdapterResolver:
    """Registry references to adapter versions: numbered versions cached for good, moving ones briefly."""

    def __init__(self, registry_root: str):
        self.root = registry_root
        self.registry = Registry(registry_root, kind="adapters")
        self._resolved: dict[str, tuple[float, ArtifactVersion]] = {}

    async def source(self, reference: str) -> AdapterSource:
        """The adapter a reference names, for the engine (404 RequestError when there is none);
        a cached answer comes without a thread hop, a registry lookup goes to a thread."""
        artifact = self.cached(reference) or await asyncio.to_thread(self.resolve, reference)
        return AdapterSource(self.root, artifact)

    def cached(self, reference: str) -> ArtifactVersion | None:
        """The still-fresh resolution of ``reference``, if there is one."""
        cached = self._resolved.get(reference)
        if cached and (cached[0] == float("inf") or time.monotonic() - cached[0] < MOVING_SELECTORS_TTL_S):
            return cached[1]
        return None

    def resolve(self, reference: str) -> ArtifactVersion:
        """Look ``reference`` up in the registry (blocking) and remember the answer."""
        try:
            artifact = self.registry.resolve(reference)
        except RegistryError as error:
            raise RequestError(404, f"adapter {reference!r} not found: {error}", "model_not_found", "model") from error
        fixed = reference.partition("@")[2].isdigit()
        self._resolved[reference] = (float("inf") if fixed else time.monotonic(), artifact)
        return artifact


class FineTunedPath(GeneratingPath):
    """LoRA adapters from the registry, applied per request on the engine's base model."""

    def __init__(self, config: FineTunedPathConfig, model: str, generate: Generate):
        super().__init__(config, model, generate)
        self.adapters = AdapterResolver(config.registry)

    async def adapter_for(self, request: PathRequest) -> AdapterSource:
        reference = request.adapter or self.config.default_adapter
        if reference is None:
            raise RequestError(
                404, "name an adapter: model rayfleet-<path>:<adapter>@<version>", "model_not_found", "model"
            )
        try:
            return await self.adapters.source(reference)
        except RequestError as error:
            if request.adapter:
                raise  # the client named it: its mistake (404)
            # The configured default is missing (nothing promoted yet): a server-side fault, so the
            # request falls back along the path's chain instead of failing the client.
            raise DefaultAdapterUnavailable(error.message) from None


class RagPath(GeneratingPath):
    """Retrieve chunks for the question, answer grounded on them (with the configured adapter, if
    any), return them as citations. A chat keeps its system text and its latest earlier turns, and
    a follow-up question is searched together with the user's turn before it. The index's newest
    version is followed (:class:`LatestRetriever`), so new documents need no redeploy. With
    ``min_score``, passages below it are dropped and a question none reaches goes to the fallback.
    A passage whose text repeats a better one's (the same document indexed twice) is left out.

    With ``context_length`` (the engine's ``max_model_len``) the passages are cut so that the whole
    prompt plus the request's ``max_tokens`` fits it: the earlier turns go first when there is no room,
    and a question that leaves none even then is refused (400, ``context_length_exceeded``)."""

    def __init__(self, config: RagPathConfig, model: str, generate: Generate, context_length: int | None = None):
        from rayfleet.retrieval.latest import LatestRetriever
        from rayfleet.routing.relevance import RelevanceThresholds

        super().__init__(config, model, generate)
        self.context_length = context_length
        self.thresholds = RelevanceThresholds(config.min_score) if config.min_score is not None else None
        prepare = self.thresholds.calibrate if self.thresholds else None
        self.index = LatestRetriever(config.index, config.index_refresh_s, config.hybrid, prepare)
        self.adapters = AdapterResolver(config.registry) if config.adapter else None

    async def stream(self, request: PathRequest) -> AsyncIterator[PathChunk]:
        if request.adapter:
            raise RequestError(
                404,
                "the RAG path takes no adapter in the model name; its adapter is configured",
                "model_not_found",
                "model",
            )
        if isinstance(request.sampling, StreamSampling) and request.sampling.prompt_logprobs is not None:
            message = ("echo with logprobs scores the prompt as sent, and the RAG path answers from a prompt of its "
                       "own (the passages and the question): ask rayfleet-base or rayfleet-finetuned")  # fmt: skip
            raise RequestError(400, message, "unsupported_on_path", "echo")
        question, query, system, history = self.thread(request)
        retriever = self.index.current()
        if retriever is None:  # a server-side gap, not the client's fault: the fallback chain answers
            raise IndexNotReady(
                f"no index version at {self.config.index} yet (jobs.build_index, or jobs.ingest index_output=)"
            )
        hits = await asyncio.to_thread(
            retriever.search, query, self.config.top_k, None, None, self.config.hybrid, distinct=True
        )
        hits = self.relevant(hits, retriever)
        passages, _, prompt_ids = self.grounded_prompt(question, hits, system, history, request.sampling.max_tokens)
        citations = citations_of(passages)
        adapter = await self.configured_adapter()
        first = True
        async for delta in self.generate(prompt_ids, request.sampling, adapter):
            yield PathChunk(
                delta.text, delta.prompt_tokens, delta.completion_tokens, delta.finish_reason,
                adapter=adapter.name if adapter and first else None, citations=citations if first else None,
                logprobs=delta.logprobs, index=delta.index,
            )  # fmt: skip
            first = False

    def relevant(self, hits: list[Hit], retriever: Retriever) -> list[Hit]:
        """The hits that reach ``min_score`` (all of them without one).

        Raises:
            NoRelevantPassages: none does (the fallback chain answers).
        """
        if self.thresholds is None:
            return hits
        threshold = self.thresholds.of(retriever)
        kept = [hit for hit in hits if hit.score >= threshold]
        if not kept:
            best = max((hit.score for hit in hits), default=None)
            raise NoRelevantPassages(
                f"no passage reaches min_score {threshold:.3f} (best {'none' if best is None else f'{best:.3f}'}): "
                "the documents do not cover this question"
            )
        return kept

    def grounded_prompt(
        self, question: str, hits: list[Hit], system: str | None, history: Conversation, max_tokens: int
    ) -> GroundedPrompt:
        """The passages used, the conversation and its prompt ids: at most ``max_context_tokens`` of passages,
        and, with a ``context_length``, a prompt that leaves ``max_tokens`` of it for the answer (the earlier turns
        dropped when they leave no room for passages).

        Raises:
            RequestError: 400 when the question alone leaves no room for passages.
        """
        budget = self.config.max_context_tokens
        if self.context_length is None:
            passages = fit_to_budget(hits, self.tokenizer, budget)
            conversation = grounded_conversation(question, passages, self.tokenizer, budget, system, history)
            return GroundedPrompt(passages, conversation, render_prompt_ids(self.tokenizer, conversation))
        room = self.context_length - max_tokens
        for turns in [history, []] if history else [history]:
            try:
                return fit_grounded_prompt(question, hits, self.tokenizer, budget, room, system, turns)
            except PromptTooLong as error:
                refusal = error
        message = f"{refusal} (the model's context is {self.context_length} tokens; max_tokens {max_tokens})"
        raise RequestError(400, message, "context_length_exceeded", "messages")

    def thread(self, request: PathRequest) -> tuple[str, str, str | None, Conversation]:
        """The question, what to search with, the system text (the config's, then the client's) and the
        earlier turns of a chat that fit ``max_history_tokens``."""
        if request.prompt is not None:
            return request.prompt, request.prompt, self.config.system_prompt, []
        client_system, earlier, question = chat_parts(request.conversation)
        system = "\n\n".join(filter(None, [self.config.system_prompt, client_system])) or None
        history = recent_turns(earlier, self.tokenizer, self.config.max_history_tokens)
        return question, retrieval_query(question, earlier), system, history

    async def configured_adapter(self) -> AdapterSource | None:
        """The configured adapter; while it resolves to nothing (none promoted yet), the base model answers."""
        if self.adapters is None:
            return None
        try:
            return await self.adapters.source(self.config.adapter)
        except RequestError as error:
            logger.warning("RAG adapter unavailable (%s): answering with the base model", error.message)
            return None


class FaultInjectionPath:
    """A deliberately broken path (fault injection for tests and drills): errors at once, hangs, or
    stalls after its first chunk (which names the request's adapter, as a real path's does)."""

    def __init__(self, config: FaultInjectionPathConfig):
        self.config = config

    async def stream(self, request: PathRequest) -> AsyncIterator[PathChunk]:
        if self.config.mode == "stall":
            yield PathChunk(" stalled", 1, 1, adapter=request.adapter)
        if self.config.mode in ("hang", "stall"):
            await asyncio.sleep(3600)
        raise RuntimeError("fault injection: this path is broken on purpose")
