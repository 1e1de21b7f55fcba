"""SFT examples -> token ids with assistant-only labels -> packed sequences.

Tokenization uses the model's own chat template, segment by segment, exactly as the
engines render a prompt at inference (``rayfleet.engines.templates``, its options
included): the context up to each assistant turn is rendered with the generation prompt
and tokenized on its own, then the assistant's reply (with the template's end-of-turn
tokens) is tokenized on its own. Only the reply tokens carry labels; everything else is
``IGNORE_INDEX``. A template that renders an earlier reply differently once later turns
follow (Qwen3 keeps the think block of the last reply only) gives one example per trained
reply instead, each with its context as the engines render it at that turn.

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
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from rayfleet import storage
from rayfleet.config import InputError
from rayfleet.engines.templates import TEMPLATE_OPTIONS, content_holds_special_tokens
from rayfleet.tables import read_schema, read_table
from schemas.openai_api import ROLE_ALIASES

IGNORE_INDEX = -100
BadExamplePolicy = Literal["drop", "fail"]


class BadExampleError(InputError):
    """An SFT row that cannot be trained on, under ``on_bad_example=fail``."""


class HistoryRewrittenError(BadExampleError):
    """The chat template renders an earlier turn differently once later turns follow (one sequence cannot hold
    every reply as inference sees it)."""


@dataclass(frozen=True)
class TokenizedExample:
    """One conversation as token ids, with labels only on the assistant's tokens."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataReport:
    """How many rows were read, kept and dropped (by reason), and how many kept rows repeat an earlier one's
    conversation word for word (kept: a repeat may be meant, to weigh a pair more)."""

    rows: int = 0
    kept: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    duplicate_conversations: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "kept": self.kept, "dropped": dict(sorted(self.dropped.items())),
                "duplicate_conversations": self.duplicate_conversations}  # fmt: skip


def sft_files(uri: str) -> list[str]:
    """The Parquet files of an SFT set: one file, or every file under a folder/prefix (any naming
    :func:`rayfleet.storage.list_parquet_files` finds)."""
    if not storage.exists(uri):
        raise FileNotFoundError(f"no SFT Parquet files at {uri}: nothing is there")
    try:
        return storage.list_parquet_files(uri)
    except ValueError as error:
        raise FileNotFoundError(f"{error}: an SFT set is Parquet with a messages column (jobs.make_qa writes one; "
                                "a CSV or JSONL set converts with pyarrow or pandas)") from error  # fmt: skip


def read_sft_rows(uri: str) -> list[dict]:
    """Every row of an SFT set (``schemas.SFT_SCHEMA``: ``messages``, ``doc_id``, ...), in file order."""
    rows = []
    for path in sft_files(uri):
        table = read_table(path)
        if "messages" not in table.column_names:
            pairs = {"question", "answer"} <= set(table.column_names)
            raise BadExampleError(
                f"{path}: no 'messages' column (columns: {table.column_names})"
                + ("; a Q&A table: jobs.make_qa writes its chat (SFT) set to sft/ beside qa/" if pairs else "")
            )
        rows.extend(table.to_pylist())
    return rows


# A content id (jobs.ingest's doc_id: a sha256 in hex) is recorded by this many of its digits: enough to
# tell documents apart, small enough for the registry metadata of an adapter trained on many thousands.
CONTENT_ID_PREFIX = 16
CONTENT_ID = re.compile(r"[0-9a-f]{64}")


def document_key(doc_id: str) -> str:
    """How a document is recorded among those an adapter trained on: a content id by its first
    :data:`CONTENT_ID_PREFIX` digits, any other id (``acl-P19-1001``, a user's) whole."""
    return doc_id[:CONTENT_ID_PREFIX] if CONTENT_ID.fullmatch(doc_id) else doc_id


def trained_documents(uri: str) -> list[str] | None:
    """The documents an SFT set's rows come from (the ``doc_id`` column jobs.make_qa writes, each as its
    :func:`document_key`), sorted; None when its files have no such column."""
    ids: set[str] = set()
    for path in sft_files(uri):
        if "doc_id" not in read_schema(path).names:
            return None
        ids.update(document_key(str(doc_id)) for doc_id in read_table(path, ["doc_id"])["doc_id"].to_pylist() if doc_id)
    return sorted(ids)


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
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, **TEMPLATE_OPTIONS
    )


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of template text (which already holds its special tokens)."""
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []


def chat_messages(messages: Any) -> list[dict] | str:
    """``messages`` as the chat template takes them (role, text content and the training weight),
    or why they cannot be trained on.

    Exports differ: ``messages`` may be a JSON string, and a message's content a list of
    OpenAI content parts (text parts are joined). An assistant turn with ``weight`` 0 (OpenAI's
    fine-tuning format) stays in the context but is not trained on; a null or absent weight is 1
    (Parquet gives every message the field once one has it). Roles are read in any case, and
    ``developer`` as ``system`` (as the serving app reads it). Tool calls and tool results,
    other roles, and non-text parts (images) are not supported: such rows are bad rows.
    """
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            return "malformed_messages"
    if not messages:
        return "missing_messages"
    if not isinstance(messages, list) or any(
        not isinstance(m, dict) or not isinstance(m.get("role"), str) for m in messages
    ):
        return "malformed_message"
    plain = []
    for message in messages:
        role = message["role"].strip().lower()
        role = ROLE_ALIASES.get(role, role)
        if message.get("tool_calls") or message.get("function_call") or role in ("tool", "function"):
            return "tool_call_turn"
        if role not in ("system", "user", "assistant"):
            return "unknown_role"
        content = message_text(message.get("content"))
        if content is None:
            return "malformed_message" if message.get("content") is None else "non_text_content"
        weight = message.get("weight")
        plain.append({"role": role, "content": content, "weight": 1 if weight is None else weight})
    return plain


def message_text(content: Any) -> str | None:
    """A message's text: a string, or the text of a list of OpenAI content parts; None otherwise."""
    if isinstance(content, str):
        return content
    if (
        isinstance(content, list)
        and content
        and all(
            isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            for part in content
        )
    ):
        return "\n".join(part["text"] for part in content)
    return None


def bad_reason(messages: list[dict]) -> str | None:
    """Why these (:func:`chat_messages`) cannot be trained on, or None when they can."""
    replies = [m for index, m in enumerate(messages) if m["role"] == "assistant" and index > 0]
    if not replies:
        return "no_assistant_turn"  # a greeting before any user turn is context, not a reply
    if any(not m["content"].strip() for m in replies):
        return "empty_answer"
    if any(m["role"] == "user" and not m["content"].strip() for m in messages):
        return "empty_question"  # an answer to nothing teaches the model to answer unasked
    if not any(m["weight"] for m in replies):
        return "no_trained_turn"
    return None


def tokenize_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> TokenizedExample:
    """Token ids and labels of one conversation: loss on every assistant reply, nothing else.

    ``messages`` are role/content dicts (a ``weight`` of 0 keeps a reply out of the loss). An
    assistant turn before any other message (a greeting) is context. Messages after the last
    assistant turn are not used (nothing to learn from them).

    Raises:
        HistoryRewrittenError: the template renders an earlier turn differently once later ones follow.
        BadExampleError: the template does not render a reply after its own context.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    turns = template_turns(messages)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, full = reply_render(tokenizer, turns, index)
        if not prompt.startswith(rendered):
            raise HistoryRewrittenError("the chat template renders an earlier turn differently once later ones follow")
        context, reply = token_ids(tokenizer, prompt[len(rendered) :]), token_ids(tokenizer, full[len(prompt) :])
        input_ids += context + reply
        labels += [IGNORE_INDEX] * len(context) + (reply if is_trained(index, message) else [IGNORE_INDEX] * len(reply))
        rendered = full
    return TokenizedExample(input_ids, labels)


def template_turns(messages: list[dict]) -> list[dict]:
    """The messages as the chat template takes them: role and content only."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def is_trained(index: int, message: dict) -> bool:
    """Whether the assistant reply at ``index`` carries loss: not an opening greeting, not weighted 0."""
    return index > 0 and message.get("weight", 1) != 0


def reply_render(tokenizer: PreTrainedTokenizerBase, turns: list[dict], index: int) -> tuple[str, str]:
    """The template's text of the context before the reply at ``index`` (with the generation prompt; empty for an
    opening reply) and of the context with the reply.

    Raises:
        BadExampleError: the template does not render the reply after its own context.
    """
    prompt = render(tokenizer, turns[:index], generation_prompt=True) if index else ""
    full = render(tokenizer, turns[: index + 1], generation_prompt=False)
    if not full.startswith(prompt):
        raise BadExampleError("the chat template does not render a reply after its own context")
    return prompt, full


def prepare_examples(
    rows: Iterable[dict],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
    on_bad_example: BadExamplePolicy,
) -> tuple[list[TokenizedExample], DataReport]:
    """Tokenize every usable row (one example, or one per trained reply: :func:`conversation_examples`); drop
    and count the others, or fail on the first, as the policy says.

    Bad rows: missing or empty ``messages``, a message without role or text content, a tool
    call, no assistant turn (or none with a nonzero weight), an empty answer, a message holding a
    special token's text (``<|im_end|>``: it would end or open a turn), a conversation
    the chat template refuses (roles out of order, a system turn it does not take) or does not
    render a reply after its context, or more than ``max_seq_len`` tokens (in any of its examples).

    Raises:
        BadExampleError: under ``fail``, naming the row, its ``doc_id`` and the reason.
        ValueError: the tokenizer has no chat template (a base model): no row could be rendered.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the model's tokenizer has no chat template, so chat rows cannot be rendered: fine-tune an "
                         "instruct/chat model, or give the tokenizer a chat_template")  # fmt: skip
    examples, report, conversations = [], DataReport(), set()
    for number, row in enumerate(rows):
        report.rows += 1
        row_examples, reason, detail = tokenized_row(tokenizer, row.get("messages"))
        longest = max((len(example) for example in row_examples or []), default=0)
        if longest > max_seq_len:
            reason, detail = "too_long", f"{longest} tokens > max_seq_len {max_seq_len}"
        if reason:
            if on_bad_example == "fail":
                raise BadExampleError(
                    f"row {number} (doc_id {row.get('doc_id')!r}): {reason}" + (f" ({detail})" if detail else "")
                )
            report.dropped[reason] += 1
            continue
        examples.extend(row_examples)
        report.kept += 1
        # As rendered (a JSON text and its list are one), kept as a hash: no second copy of every row's tokens.
        conversation = hash(tuple((tuple(example.input_ids), tuple(example.labels)) for example in row_examples))
        report.duplicate_conversations += conversation in conversations
        conversations.add(conversation)
    return examples, report


def tokenized_row(
    tokenizer: PreTrainedTokenizerBase, messages: Any
) -> tuple[list[TokenizedExample] | None, str | None, str]:
    """One row's examples, or why it has none (a reason and a detail)."""
    messages = chat_messages(messages)
    reason = messages if isinstance(messages, str) else bad_reason(messages)
    if reason:
        return None, reason, ""
    if any(content_holds_special_tokens(tokenizer, message.get("content")) for message in messages):
        detail = "a message holds a special token's text (e.g. <|im_end|>), which would forge a turn"
        return None, "special_token_text", detail
    try:
        return conversation_examples(tokenizer, messages), None, ""
    except (ValueError, TypeError, TemplateError) as error:  # BadExampleError is a ValueError
        return None, "template_error", str(error)


def conversation_examples(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[TokenizedExample]:
    """The examples of one conversation: one sequence (:func:`tokenize_conversation`), or, when the template
    renders earlier replies differently once later turns follow, one per trained reply (:func:`reply_example`).

    Raises:
        BadExampleError: a reply the template does not render after its own context.
    """
    try:
        return [tokenize_conversation(tokenizer, messages)]
    except HistoryRewrittenError:
        turns = template_turns(messages)
        trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and is_trained(i, m)]
        return [reply_example(tokenizer, turns, index) for index in trained]


def reply_example(tokenizer: PreTrainedTokenizerBase, turns: list[dict], index: int) -> TokenizedExample:
    """The reply at ``index`` after its context, as the engines render that turn; labels on the reply only.

    Raises:
        BadExampleError: the template does not render the reply after its context.
    """
    prompt, full = reply_render(tokenizer, turns, index)
    context, reply = token_ids(tokenizer, prompt), token_ids(tokenizer, full[len(prompt) :])
    return TokenizedExample(context + reply, [IGNORE_INDEX] * len(context) + reply)


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
        raise ValueError(
            f"{len(too_long)} examples are longer than pack_length {pack_length} (longest {max(too_long)})"
        )
    bins: list[RowBin] = []
    rooms = RoomIndex(len(examples))  # first fit in O(log rows) per example, not a scan of every row
    for example in sorted(examples, key=len, reverse=True):
        index = rooms.first(len(example))
        while index is not None and not bins[index].fits(example, pack_length):
            index = rooms.first(len(example), start=index + 1)
        if index is None:
            index = len(bins)
            bins.append(RowBin(share_prefix))
        bins[index].add(example)
        rooms.set(index, bins[index].room_bound(pack_length))
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

    def room_bound(self, pack_length: int) -> int:
        """The longest example the row could still take (with the longest prefix it could share):
        :meth:`fits` is false for any longer one."""
        return pack_length - self.tokens + len(self.members) * (self.prefix if self.share_prefix else 0)

    def add(self, example: TokenizedExample) -> None:
        self.prefix = self.prefix_with(example)
        self.members.append(example)
        self.tokens += len(example)

    def shared_prefix(self) -> int:
        """Tokens the row holds once: none without sharing or with a single example."""
        return self.prefix if self.share_prefix and len(self.members) > 1 else 0


class RoomIndex:
    """Packed rows in creation order with each one's room bound, in a max segment tree: the first
    row from ``start`` whose bound reaches a length is found in logarithmic time."""

    def __init__(self, capacity: int) -> None:
        self.size = 1
        while self.size < max(capacity, 1):
            self.size *= 2
        self.tree = [-1] * (2 * self.size)  # -1: no row there yet

    def set(self, index: int, room: int) -> None:
        node = index + self.size
        self.tree[node] = room
        while node > 1:
            node //= 2
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])

    def first(self, need: int, start: int = 0) -> int | None:
        """The lowest row index ``>= start`` whose room bound is at least ``need``, or None."""
        return self._first(1, 0, self.size, need, start)

    def _first(self, node: int, low: int, high: int, need: int, start: int) -> int | None:
        if high <= start or self.tree[node] < need:
            return None
        if high - low == 1:
            return low
        middle = (low + high) // 2
        found = self._first(2 * node, low, middle, need, start)
        return found if found is not None else self._first(2 * node + 1, middle, high, need, start)


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
