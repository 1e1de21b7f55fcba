"""Chat-template rendering shared by every engine, so all engines see identical token ids.

Templates are rendered with :data:`TEMPLATE_OPTIONS`: hybrid reasoning models (Qwen3 and
its kind) take ``enable_thinking`` and, with it off, answer at once (their prompt ends
with an empty think block), so summaries, answers and evaluations hold no reasoning text
and spend no tokens on it; templates that do not know the option ignore it.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from rayfleet.engines.base import Conversation

TEMPLATE_OPTIONS = {"enable_thinking": False}  # extra variables every chat template is rendered with


def render_prompt_text(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> str:
    """The conversation rendered by the model's chat template, ready for the assistant turn."""
    if not tokenizer.chat_template:
        # Base models without a template: plain "role: content" lines.
        lines = [f"{message['role']}: {message['content']}" for message in conversation]
        return "\n".join(lines) + "\nassistant:"
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **TEMPLATE_OPTIONS)


def render_prompt_ids(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> list[int]:
    """Token ids of :func:`render_prompt_text` (the template already holds special tokens)."""
    return tokenizer(render_prompt_text(tokenizer, conversation), add_special_tokens=False)["input_ids"]
