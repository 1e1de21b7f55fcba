"""Pydantic models of the OpenAI-compatible API the serving app speaks (the subset it implements).

Requests accept the fields the official ``openai`` client sends; unknown fields are
ignored as OpenAI does. A chat's ``response_format`` may ask for any JSON object or for JSON
valid against a schema (checked here to be a JSON Schema); the engine decodes every reply to
match (vLLM structured outputs). Log probabilities are returned as OpenAI shapes them (a chat's
``logprobs`` / ``top_logprobs``, a completion's ``logprobs``); a completion's prompt may be token ids
or several prompts, and ``echo`` answers with it first. Fields this server knows but cannot honour
(tools, ``suffix``, ``best_of``) are refused with
a 400 that names them when they ask for something, never silently dropped: an answer that
ignored them would look right and be wrong. Text holding a
lone UTF-16 surrogate (a JSON escape like ``\ud83d`` without its pair, as a client that cut an
emoji in half sends) is not Unicode and is refused naming where it is. An explicit
``null`` means the field's default, as in OpenAI. Message content may be a string or a list
of text parts (as newer clients send); an assistant message's content may be null (after a
refusal, say) and reads as empty; the ``developer`` role is read as ``system``. Responses
carry the standard fields plus ``rayfleet`` extensions (``citations`` on RAG answers), which
the client exposes as extra attributes.
"""

from __future__ import annotations

import re
import reprlib
import time
import uuid
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

MAX_STOP_SEQUENCES = 4  # as OpenAI
MAX_TOP_LOGPROBS = 20  # a chat's top_logprobs, as OpenAI
MAX_COMPLETION_LOGPROBS = 5  # a completion's logprobs, as OpenAI
MAX_LOGIT_BIAS = 100  # as OpenAI
MAX_BIASED_TOKENS = 1024  # entries of one logit_bias
SEED_LIMIT = 2**63  # seeds reach torch generators as signed 64-bit integers
NO_TOOL_CALLING = "is for tool calling, which this server does not support"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
LONE_SURROGATE_ERROR = "lone_surrogate"  # its context holds where the text is, for the error's param
FIELD_ERROR = "invalid_field"  # a check of the whole request that blames one field (``where`` in its context)
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for system instructions (serving and training read it so)


def as_prompts(prompt: Any) -> list:
    """The prompts a completion's ``prompt`` holds: a list of texts or of token-id lists is several, anything else
    (a text, a list of token ids) one."""
    several = isinstance(prompt, list) and prompt and all(isinstance(item, (str, list)) for item in prompt)
    return list(prompt) if several else [prompt]


def is_token_id(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool) and item >= 0


def lone_surrogate_at(value: Any, where: str) -> str | None:
    """Where in a parsed JSON value (``where`` for the value itself) a string holds a lone UTF-16
    surrogate, the first in the body's order, if one does: JSON's ``\\uXXXX`` escapes allow it, Unicode text
    (and every tokenizer) does not. It walks with a stack of its own, so a deeply nested body is no RecursionError."""
    pending = [(value, where)]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str) and LONE_SURROGATE.search(value):
            return where
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        pending.extend(reversed([(item, f"{where}.{key}") for key, item in items]))
    return None


class ChatMessage(BaseModel):
    """One message of an answer."""

    role: Literal["system", "user", "assistant"] = Field(..., description="Who wrote the message.")
    content: str = Field(..., description="The message text.")


class RequestMessage(BaseModel):
    """One message of a request's conversation: text, or a list of text parts joined by newlines."""

    role: Literal["system", "user", "assistant"] = Field(
        ..., description="Who wrote the message (``developer`` is read as ``system``; tool messages are refused)."
    )
    content: str = Field(
        ..., description="The message text, or a list of ``{type: text, text}`` parts; an assistant's null is empty."
    )
    tool_calls: list[dict] | None = Field(None, description="Not supported: refused unless empty.")
    function_call: dict | None = Field(None, description="Not supported (deprecated tool calls): refused when set.")

    @model_validator(mode="before")
    @classmethod
    def assistant_content_may_be_null(cls, message: Any) -> Any:
        if isinstance(message, dict) and message.get("role") == "assistant" and message.get("content") is None:
            return {**message, "content": ""}
        return message

    @field_validator("role", mode="before")
    @classmethod
    def developer_is_system(cls, role: Any) -> Any:
        if role in ("tool", "function"):
            raise ValueError(f"role {role!r} {NO_TOOL_CALLING}")
        return ROLE_ALIASES.get(role, role)

    @field_validator("content", mode="before")
    @classmethod
    def text_parts_joined(cls, content: Any) -> Any:
        if not isinstance(content, list):
            return content
        if not content:
            raise ValueError("a list of content parts must hold at least one")
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text":
                raise ValueError(f"content part of type {kind!r} is not supported: this server takes text parts only")
            if not isinstance(part.get("text"), str):
                raise ValueError("a text part's text must be a string")
            texts.append(part["text"])
        return "\n".join(texts)

    @model_validator(mode="after")
    def no_tool_calls(self):
        if self.tool_calls or self.function_call:
            field = "tool_calls" if self.tool_calls else "function_call"
            raise ValueError(f"a message with {field} {NO_TOOL_CALLING}")
        return self

    def turn(self) -> dict[str, str]:
        """The message as the chat template reads it: role and content."""
        return {"role": self.role, "content": self.content}


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with the token usage.")

    @field_validator("include_usage", mode="before")
    @classmethod
    def null_is_default(cls, value: Any) -> Any:
        return False if value is None else value


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: the JSON Schema every reply must satisfy."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = Field(None, max_length=64, description="The schema's name (OpenAI requires one; not used).")
    description: str | None = Field(None, description="What the reply is for (not used).")
    json_schema: dict[str, Any] = Field(
        default_factory=dict, alias="schema", description="A JSON Schema; without one, any JSON value."
    )
    strict: bool | None = Field(None, description="Always strict here: the reply is decoded to match the schema.")

    @field_validator("json_schema")
    @classmethod
    def a_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as error:
            where = ".".join(map(str, error.relative_path)) or "its top"
            raise ValueError(f"not a valid JSON Schema at {where}: {error.message}") from None
        return schema


class ResponseFormat(BaseModel):
    """``response_format``: free text, any JSON object, or JSON matching a schema (decoded to match)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"] = Field(..., description="What every reply must be.")
    json_schema: JsonSchemaFormat | None = Field(None, description="The schema, for type json_schema.")

    @model_validator(mode="after")
    def schema_with_its_type(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self

    def constraint(self) -> dict[str, Any]:
        """The SamplingConfig fields that hold every reply to this format."""
        if self.type == "json_object":
            return {"json_object": True}
        if self.type == "json_schema":
            return {"json_schema": self.json_schema.json_schema}
        return {}


class SamplingFields(BaseModel):
    """Sampling fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")
    # Fields this server knows but cannot honour, and when a value asks for them (refused by name).
    UNSUPPORTED: ClassVar[dict[str, Callable[[Any], bool]]] = {}

    model: str = Field(
        ..., min_length=1, description="rayfleet (routed), rayfleet-<path> or rayfleet-<path>:<adapter>@<version>."
    )
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (the server's limit applies).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 is greedy decoding.")
    top_p: float = Field(1.0, ge=0.0, le=1.0, description="Nucleus sampling mass; 0 is greedy decoding.")
    seed: int | None = Field(
        None, ge=0, lt=SEED_LIMIT, description="Seed for sampled decoding; without one each request samples afresh."
    )
    stream: bool = Field(False, description="Answer as server-sent events, one chunk per delta.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    user: str | None = Field(
        None, max_length=256, description="End-user id (used for A/B assignment when no header is sent)."
    )
    stop: str | list[str] | None = Field(
        None,
        validate_default=True,
        description=f"Up to {MAX_STOP_SEQUENCES} strings; the answer ends before the first one generated.",
    )
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="Penalty on tokens already generated, once each.")
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Penalty on tokens already generated, per occurrence."
    )
    n: int | None = Field(
        None,
        ge=1,
        description="Answers to generate (up to the server's limit); above 1 needs sampling (temperature above 0, "
        "top_p above 0).",
    )
    logit_bias: dict[str, float] | None = Field(
        None,
        description=f"Token id (as text) to a bias added to its logit before sampling, within ±{MAX_LOGIT_BIAS} "
        f"(-{MAX_LOGIT_BIAS} bans the token, {MAX_LOGIT_BIAS} forces it).",
    )

    @field_validator("*", mode="before")
    @classmethod
    def unicode_text(cls, value: Any, info: ValidationInfo) -> Any:
        where = lone_surrogate_at(value, info.field_name)
        if where is not None:
            raise PydanticCustomError(LONE_SURROGATE_ERROR,
                                      "the text at {where} holds a lone UTF-16 surrogate (half of "
                                      "an escaped pair such as \\ud83d), which is not Unicode: "
                                      "send the whole character",
                                      {"where": where})  # fmt: skip
        return value

    @model_validator(mode="after")
    def stream_options_only_when_streaming(self):
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError(FIELD_ERROR, "stream_options is only allowed when stream is true",
                                      {"where": "stream_options"})  # fmt: skip
        return self

    @field_validator("*")
    @classmethod
    def nothing_unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        asks = cls.UNSUPPORTED.get(info.field_name)
        if asks is not None and asks(value):
            raise ValueError(f"not supported by this server: {info.field_name}={reprlib.repr(value)}")
        return value

    @field_validator("temperature", "top_p", "presence_penalty", "frequency_penalty", "stream", mode="before")
    @classmethod
    def null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        return cls.model_fields[info.field_name].default if value is None else value

    @field_validator("logit_bias")
    @classmethod
    def token_biases(cls, biases: dict[str, float] | None) -> dict[str, float] | None:
        if len(biases or {}) > MAX_BIASED_TOKENS:
            raise ValueError(f"at most {MAX_BIASED_TOKENS} tokens, got {len(biases)}")
        seen: set[int] = set()
        for token, bias in (biases or {}).items():
            if not token.isascii() or not token.isdigit() or len(token) > 10:
                raise ValueError(f'keys are token ids written as text, such as "1234"; got {reprlib.repr(token)}')
            if int(token) in seen:
                raise ValueError(f"token {int(token)} is given twice ({token!r})")
            seen.add(int(token))
            if not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
                raise ValueError(f"biases are within ±{MAX_LOGIT_BIAS}; token {token} has {bias}")
        return biases or None

    def token_biases_by_id(self) -> dict[int, float] | None:
        """``logit_bias`` with integer token ids."""
        return {int(token): bias for token, bias in self.logit_bias.items()} if self.logit_bias else None

    @field_validator("stop")
    @classmethod
    def stop_sequences(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stops)}")
        if any(not text for text in stops):
            raise ValueError("stop sequences must not be empty strings")
        return stops


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}]})  # fmt: skip

    messages: list[RequestMessage] = Field(..., min_length=1, description="The conversation, oldest first.")
    max_completion_tokens: int | None = Field(
        None, ge=1, description="Newer name of max_tokens; wins when both are set."
    )
    logprobs: bool | None = Field(
        None, description="Return each answer token's log probability (choices[].logprobs.content)."
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="With logprobs: this many likeliest tokens at each place."
    )
    tools: list[dict] | None = Field(None, description="Not supported: refused unless empty.")
    functions: list[dict] | None = Field(None, description="Not supported (deprecated tools): refused unless empty.")
    tool_choice: str | dict | None = Field(None, description="Only none or auto without tools.")
    response_format: ResponseFormat | None = Field(
        None, description="text, json_object (any JSON object) or json_schema (JSON valid against its schema)."
    )
    function_call: str | dict | None = Field(None, description="Only none or auto (deprecated tool_choice).")
    modalities: list[str] | None = Field(None, description="Only text.")
    audio: dict | None = Field(None, description="Not supported: refused when set.")

    UNSUPPORTED = SamplingFields.UNSUPPORTED | {
        "tools": bool, "functions": bool,
        "tool_choice": lambda choice: choice not in (None, "none", "auto"),
        "function_call": lambda choice: choice not in (None, "none", "auto"),
        "modalities": lambda modalities: any(modality != "text" for modality in modalities or []),
        "audio": lambda audio: audio is not None,
    }  # fmt: skip

    @model_validator(mode="after")
    def top_logprobs_only_with_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError(FIELD_ERROR, "top_logprobs needs logprobs: true", {"where": "top_logprobs"})
        return self

    def logprobs_asked(self) -> int | None:
        """How many likeliest tokens to list at each place when log probabilities are asked for, else None."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    """``POST /v1/completions`` (one prompt per request)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "rayfleet-base", "prompt": "The capital of France is", "max_tokens": 4}]})  # fmt: skip

    prompt: str | list[int] | list[str | list[int]] = Field(
        ...,
        description="The prompt, continued as is (no chat template): text, or the token ids of this model's "
        "tokenizer; or a list of prompts, each answered (not streamed; choices run prompt by prompt).",
    )
    echo: bool | None = Field(
        None, description="Answer with the prompt before the continuation (and, with logprobs, its tokens' too)."
    )
    suffix: str | None = Field(None, description="Not supported: refused unless empty.")
    best_of: int | None = Field(None, description="Only 1.")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_COMPLETION_LOGPROBS,
        description="Return each generated token's log probability and this many likeliest tokens at its place.",
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def prompts_as_sent(cls, prompt: Any) -> Any:
        prompts = as_prompts(prompt)
        for prompt in prompts:
            if isinstance(prompt, list) and not (prompt and all(is_token_id(item) for item in prompt)):
                raise ValueError("a prompt of token ids is a non-empty list of integers from 0")
            if isinstance(prompt, str) and not prompt:
                raise ValueError("a prompt is empty")
        return prompts[0] if len(prompts) == 1 else prompts

    def prompts(self) -> list[str | list[int]]:
        """Every prompt, in order (one, for a request of one)."""
        return as_prompts(self.prompt)

    UNSUPPORTED = SamplingFields.UNSUPPORTED | {
        "suffix": bool, "best_of": lambda best_of: best_of not in (None, 1),
    }  # fmt: skip

    def logprobs_asked(self) -> int | None:
        """How many likeliest tokens to list at each place when log probabilities are asked for, else None."""
        return self.logprobs


class Citation(BaseModel):
    """A retrieved chunk a RAG answer was grounded on."""

    doc_id: str = Field(..., description="Document the chunk belongs to.")
    chunk_id: str = Field(..., description="The chunk's id in the index.")
    page: int | None = Field(None, description="First page of the chunk, when known.")
    title: str | None = Field(None, description="Title of the chunk's document, when known.")
    source: str | None = Field(None, description="URI of the file the document was ingested from, when known.")
    score: float = Field(..., description="Cosine similarity of the chunk to the question.")


class Usage(BaseModel):
    prompt_tokens: int = Field(..., description="Tokens of the prompt as the model saw it.")
    completion_tokens: int = Field(..., description="Tokens generated.")
    total_tokens: int = Field(..., description="Their sum.")


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class TopLogprob(BaseModel):
    token: str = Field(..., description="The token's text.")
    logprob: float = Field(
        ...,
        description="Its log probability under the model, before temperature, penalties and logit_bias "
        "(-9999: a token the response format forbids).",
    )
    bytes: list[int] = Field(..., description="The token's text as UTF-8 bytes.")


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(..., description="The likeliest tokens at this place, likeliest first.")


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] = Field(..., description="One entry per generated token, in order.")


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None] = Field(..., description="None for an echoed prompt's first token.")
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int] = Field(..., description="Where each token's text starts in the answer.")


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: completion_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[Citation] | None = Field(None, description="RAG path: the chunks the answer was grounded on.")


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    citations: list[Citation] | None = None


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: completion_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    citations: list[Citation] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "rayfleet"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
