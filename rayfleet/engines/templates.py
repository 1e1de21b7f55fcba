"""Chat-template rendering shared by every engine, so all engines see identical token ids.

Templates are rendered with :data:`TEMPLATE_OPTIONS`: hybrid reasoning models (Qwen3 and
its kind) take ``enable_thinking`` and, with it off, answer at once (their prompt ends
with an empty think block), so summaries, answers and evaluations hold no reasoning text
and spend no tokens on it; templates that do not know the option ignore it.

The template's own special tokens (``<|im_start|>``) become their ids; the same strings inside
a message (a document about chat formats, a user quoting one) stay text, as OpenAI's API
treats them, so no content can close a turn or open a new one.
"""

from __future__ import annotations

import re
import uuid

from transformers import PreTrainedTokenizerBase

from rayfleet.engines.base import Conversation

TEMPLATE_OPTIONS = {"enable_thinking": False}  # extra variables every chat template is rendered with


def count_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Tokens of ``text`` as plain content (special-token strings in it split like any text). Only counted:
    ``verbose=False`` keeps transformers from warning of "indexing errors" for a text past the model's length."""
    return len(tokenizer(text, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"])


def render_prompt_text(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> str:
    """The conversation rendered by the model's chat template, ready for the assistant turn."""
    if not tokenizer.chat_template:
        # Base models without a template: plain "role: content" lines.
        lines = [f"{message['role']}: {message['content']}" for message in conversation]
        return "\n".join(lines) + "\nassistant:"
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **TEMPLATE_OPTIONS)


def render_prompt_ids(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> list[int]:
    """Token ids of :func:`render_prompt_text`: the template's special tokens as their ids, the
    messages' text as text (:func:`content_holds_special_tokens`)."""
    if not any(content_holds_special_tokens(tokenizer, message.get("content")) for message in conversation):
        return tokenizer(render_prompt_text(tokenizer, conversation), add_special_tokens=False)["input_ids"]
    marker = f"RAYFLEET{uuid.uuid4().hex}MESSAGE"
    stand_ins = [{**message, "content": f"{marker}{index}X"} for index, message in enumerate(conversation)]
    ids: list[int] = []
    for position, piece in enumerate(re.split(rf"{marker}(\d+)X", render_prompt_text(tokenizer, stand_ins))):
        is_content = position % 2 == 1  # re.split puts each captured message index between the template's pieces
        text = str(conversation[int(piece)].get("content") or "") if is_content else piece
        if text:
            ids += tokenizer(text, add_special_tokens=False, split_special_tokens=is_content)["input_ids"]
    return ids


def content_holds_special_tokens(tokenizer: PreTrainedTokenizerBase, content: object) -> bool:
    """Whether a message's text holds the text of one of the tokenizer's special tokens (``<|im_end|>``)."""
    if not content:
        return False
    text = str(content)
    return any(token.content in text for token in tokenizer.added_tokens_decoder.values() if token.special)
