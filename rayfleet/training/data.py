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

Shared prefixes: the examples of a row usually begin with the same tokens (the chat
template's system prompt and role header: 25 of SmolLM2's 82-token aclsum examples). A
row holds those tokens once, at its start, and each example's own tokens continue from
their position there; the attention (``rayfleet.training.attention``) lets every example
see the shared tokens, so each token gets exactly the logits it gets alone, and the
model runs on fewer tokens (29 % fewer on the aclsum set). Only unlabelled tokens are shared, and never the
one before an example's first label, so no loss is computed at a shared position.
Without LoRA dropout the loss and gradients equal those of the unshared row; with it,
the shared tokens draw one dropout mask for all examples of the row instead of one each.
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


def pack_examples(
    examples: list[TokenizedExample], pack_length: int, seed: int = 0, share_prefix: bool = True
) -> list[dict]:
    """Pack examples into rows of at most ``pack_length`` tokens, no padding, in a seeded random order.

    First-fit decreasing: longest examples first, each into the first row with room.
    Each row holds ``input_ids``, ``labels`` and ``position_ids`` (restarting for every
    example: the attention boundary), ``examples`` (how many it holds) and
    ``example_tokens`` (their tokens, a shared prefix counted once for each). The first
    token of an example has no label (it is context), so no loss crosses a boundary either.
    With ``share_prefix`` the tokens every example of a row begins with are held once
    (see the module docstring), and an example fits a row when the row, prefix once, does.
    """
    too_long = [len(example) for example in examples if len(example) > pack_length]
    if too_long:
        raise ValueError(f"{len(too_long)} examples are longer than pack_length {pack_length} (longest {max(too_long)})")
    bins: list[RowBin] = []
    for example in sorted(examples, key=len, reverse=True):
        target = next((row for row in bins if row.fits(example, pack_length)), None)
        if target is None:
            target = RowBin(share_prefix)
            bins.append(target)
        target.add(example)
    rows = [packed_row(row.members, row.shared_prefix()) for row in bins]
    random.Random(seed).shuffle(rows)
    return rows


@dataclass
class RowBin:
    """A packed row being filled: its examples, their tokens, and how many first tokens they can share."""

    share_prefix: bool
    members: list[TokenizedExample] = field(default_factory=list)
    tokens: int = 0
    prefix: int = 0  # first tokens all members could share (one member: all before its first label but one)

    def prefix_with(self, example: TokenizedExample) -> int:
        """The shareable prefix of the row's members and ``example``."""
        limit = max(first_label(example) - 1, 0)
        if not self.members:
            return limit
        return common_prefix_length(self.members[0].input_ids, example.input_ids, min(self.prefix, limit))

    def fits(self, example: TokenizedExample, pack_length: int) -> bool:
        """Whether the row, a shared prefix held once, has room for ``example``."""
        if not self.share_prefix:
            return self.tokens + len(example) <= pack_length
        if self.tokens + len(example) - len(self.members) * self.prefix > pack_length:
            return False  # not even with the longest prefix it could share
        return self.tokens + len(example) - len(self.members) * self.prefix_with(example) <= pack_length

    def add(self, example: TokenizedExample) -> None:
        self.prefix = self.prefix_with(example)
        self.members.append(example)
        self.tokens += len(example)

    def shared_prefix(self) -> int:
        """Tokens the row holds once: none without sharing or with a single example."""
        return self.prefix if self.share_prefix and len(self.members) > 1 else 0


def first_label(example: TokenizedExample) -> int:
    """Index of the example's first labelled token (its length when it has none)."""
    return next((index for index, label in enumerate(example.labels) if label != IGNORE_INDEX), len(example))


def common_prefix_length(first: list[int], second: list[int], limit: int) -> int:
    """How many first tokens ``first`` and ``second`` have in common, at most ``limit``."""
    length = 0
    while length < limit and first[length] == second[length]:
        length += 1
    return length


def packed_row(examples: list[TokenizedExample], prefix: int = 0) -> dict:
    """One packed row from its examples, their first ``prefix`` tokens (all the same, unlabelled) held once."""
    return {
        "input_ids": examples[0].input_ids[:prefix] + [token for ex in examples for token in ex.input_ids[prefix:]],
        "labels": [IGNORE_INDEX] * prefix + [label for ex in examples for label in ex.labels[prefix:]],
        "position_ids": list(range(prefix)) + [position for ex in examples for position in range(prefix, len(ex))],
        "examples": len(examples),
        "example_tokens": sum(len(example) for example in examples),
    }


def example_tokens(row: dict) -> int:
    """Tokens of the examples a packed row trains on: a shared prefix counts once per example, as in the data."""
    return row.get("example_tokens", len(row["input_ids"]))


def shared_token_share(rows: list[dict]) -> float:
    """Share of the examples' tokens that shared prefixes leave out of the rows (0 without sharing)."""
    examples = sum(example_tokens(row) for row in rows)
    return 1 - sum(len(row["input_ids"]) for row in rows) / examples if examples else 0.0
