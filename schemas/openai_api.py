"""Pydantic models of the OpenAI-compatible API the serving app speaks (the subset it implements).

Requests accept the fields the official ``openai`` client sends; unknown fields are
ignored as OpenAI does. Responses carry the standard fields plus ``rayfleet``
extensions (``citations`` on RAG answers), which the client exposes as extra attributes.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    """One message of a conversation."""

    role: Literal["system", "user", "assistant"] = Field(..., description="Who wrote the message.")
    content: str = Field(..., description="The message text.")


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with the token usage.")


class SamplingFields(BaseModel):
    """Sampling fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, description="rayfleet (routed), rayfleet-<path> or rayfleet-<path>:<adapter>@<version>.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (the server's limit applies).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Seed for sampled decoding.")
    stream: bool = Field(False, description="Answer as server-sent events, one chunk per delta.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options.")
    user: str | None = Field(None, max_length=256, description="End-user id (used for A/B assignment when no header is sent).")


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "rayfleet-base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}]})  # fmt: skip

    messages: list[ChatMessage] = Field(..., min_length=1, description="The conversation, oldest first.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens; wins when both are set.")


class CompletionRequest(SamplingFields):
    """``POST /v1/completions`` (one prompt per request)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"model": "rayfleet-base", "prompt": "The capital of France is", "max_tokens": 4}]})  # fmt: skip

    prompt: str = Field(..., min_length=1, description="The prompt text, continued as is (no chat template).")


class Citation(BaseModel):
    """A retrieved chunk a RAG answer was grounded on."""

    doc_id: str = Field(..., description="Document the chunk belongs to.")
    chunk_id: str = Field(..., description="The chunk's id in the index.")
    page: int | None = Field(None, description="First page of the chunk, when known.")
    score: float = Field(..., description="Cosine similarity of the chunk to the question.")


class Usage(BaseModel):
    prompt_tokens: int = Field(..., description="Tokens of the prompt as the model saw it.")
    completion_tokens: int = Field(..., description="Tokens generated.")
    total_tokens: int = Field(..., description="Their sum.")


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessage
    finish_reason: str | None


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
    logprobs: None = None


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
