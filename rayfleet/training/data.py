"""SFT examples -> token ids with assistant-only labels -> packed sequences.

Tokenization uses the model's own chat template, segment by segment, exactly as the
engines render a prompt at inference (``rayfleet.engines.templates``): the context up
to each assistant turn is rendered with the generation prompt and tokenized on its
own, then the assistant's reply (with the template's end-of-turn tokens) is tokenized
on its own. Only the reply tokens carry labels; everything else is ``IGNORE_INDEX``.

Packing puts several examples into one row with no padding. Each example keeps its own
attention: ``position_ids`` restart at 0 at every example, and with ``attention_mask``
left unset and no KV cache (``use_cache=False``: with a cache the detection is
skipped, silently) transformers' mask builder (``masking_utils.find_packed_sequence_indices``)
turns those restarts into a block-diagonal causal mask for the sdpa and eager
attention kernels (and the varlen path of flash attention). No token attends across
an example boundary, which ``tests/training/test_data.py`` checks against the examples
run one by one.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from transformers import PreTrainedTokenizerBase

from rayfleet import storage
from rayfleet.tables import read_table

IGNORE_INDEX = -100
BadExamplePolicy = Literal["drop", "fail"]


class BadExampleError(ValueError):
    """An SFT row that cannot be trained on, under ``on_bad_example=fail``."""


@dataclass(frozen=True)
class TokenizedExample:
    """One conversation as token ids, with labels only on the assistant's tokens."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataReport:
    """How many rows were read, kept and dropped (by reason)."""

    rows: int = 0
    kept: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


def sft_files(uri: str) -> list[str]:
    """The Parquet files of an SFT set: one file, or every file under a folder/prefix."""
    files = storage.list_files(uri, suffixes=(".parquet",))
    if not files:
        raise FileNotFoundError(f"no SFT Parquet files at {uri}")
    return files


def read_sft_rows(uri: str) -> list[dict]:
    """Every row of an SFT set (``schemas.SFT_SCHEMA``: ``messages``, ``doc_id``, ...), in file order."""
    rows = []
    for path in sft_files(uri):
        table = read_table(path)
        if "messages" not in table.column_names:
            raise BadExampleError(f"{path}: no 'messages' column (columns: {table.column_names})")
        rows.extend(table.to_pylist())
    return rows


def dataset_fingerprint(uri: str) -> str:
    """A short sha256 over the SFT set's file names and bytes, recorded with the adapter."""
    digest = hashlib.sha256()
    for path in sft_files(uri):
        digest.update(path.rsplit("/", 1)[-1].encode())
        digest.update(storage.read_bytes(path))
    return digest.hexdigest()[:16]


def rows_fingerprint(rows: list[dict]) -> str:
    """A short sha256 of packed training rows, in order (what a run's data position points into)."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool) -> str:
    """The chat template's text for ``messages``."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of template text (which already holds its special tokens)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def bad_reason(messages: Any) -> str | None:
    """Why a row's ``messages`` cannot be trained on, or None when they can."""
    if not messages:
        return "missing_messages"
    if any(not isinstance(m, dict) or not m.get("role") or m.get("content") is None for m in messages):
        return "malformed_message"
    replies = [m for m in messages if m["role"] == "assistant"]
    if not replies:
        return "no_assistant_turn"
    if any(not m["content"].strip() for m in replies):
        return "empty_answer"
    return None


def tokenize_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> TokenizedExample:
    """Token ids and labels of one conversation: loss on every assistant reply, nothing else.

    Messages after the last assistant turn are not used (nothing to learn from them).
    """
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:index], generation_prompt=True)
        full = render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not prompt.startswith(rendered) or not full.startswith(prompt):
            raise BadExampleError("the chat template does not render conversations as prefixes of each other")
        context, reply = token_ids(tokenizer, prompt[len(rendered) :]), token_ids(tokenizer, full[len(prompt) :])
        input_ids += context + reply
        labels += [IGNORE_INDEX] * len(context) + reply
        rendered = full
    return TokenizedExample(input_ids, labels)


def prepare_examples(
    rows: Iterable[dict],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
    on_bad_example: BadExamplePolicy,
) -> tuple[list[TokenizedExample], DataReport]:
    """Tokenize every usable row; drop and count the others, or fail on the first, as the policy says.

    Bad rows: missing or empty ``messages``, a message without role or content, no
    assistant turn, an empty answer, or more than ``max_seq_len`` tokens.

    Raises:
        BadExampleError: under ``fail``, naming the row, its ``doc_id`` and the reason.
    """
    examples, report = [], DataReport()
    for number, row in enumerate(rows):
        report.rows += 1
        reason = bad_reason(row.get("messages"))
        example = None if reason else tokenize_conversation(tokenizer, row["messages"])
        if example is not None and len(example) > max_seq_len:
            reason = "too_long"
        if reason:
            if on_bad_example == "fail":
                detail = f" ({len(example)} tokens > max_seq_len {max_seq_len})" if reason == "too_long" else ""
                raise BadExampleError(f"row {number} (doc_id {row.get('doc_id')!r}): {reason}{detail}")
            report.dropped[reason] += 1
            continue
        examples.append(example)
        report.kept += 1
    return examples, report


def pack_examples(examples: list[TokenizedExample], pack_length: int, seed: int = 0) -> list[dict]:
    """Pack examples into rows of at most ``pack_length`` tokens, no padding, in a seeded random order.

    First-fit decreasing: longest examples first, each into the first row with room.
    Each row holds ``input_ids``, ``labels`` and ``position_ids`` (restarting at 0 for
    every example: the attention boundary) and ``examples`` (how many it holds).
    The first token of an example has no label (it is context), so no loss crosses a
    boundary either.
    """
    too_long = [len(example) for example in examples if len(example) > pack_length]
    if too_long:
        raise ValueError(f"{len(too_long)} examples are longer than pack_length {pack_length} (longest {max(too_long)})")
    bins: list[list[TokenizedExample]] = []
    room: list[int] = []
    for example in sorted(examples, key=len, reverse=True):
        target = next((i for i, free in enumerate(room) if free >= len(example)), None)
        if target is None:
            bins.append([])
            room.append(pack_length)
            target = len(bins) - 1
        bins[target].append(example)
        room[target] -= len(example)
    rows = [packed_row(members) for members in bins]
    random.Random(seed).shuffle(rows)
    return rows


def packed_row(examples: list[TokenizedExample]) -> dict:
    """One packed row from its examples."""
    return {
        "input_ids": [token for example in examples for token in example.input_ids],
        "labels": [label for example in examples for label in example.labels],
        "position_ids": [position for example in examples for position in range(len(example))],
        "examples": len(examples),
    }
