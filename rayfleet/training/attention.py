"""Attention over packed rows, one example at a time: no work across example boundaries.

A packed row holds several examples; ``position_ids`` restart at every example. With
torch's sdpa, transformers turns the restarts into a block-diagonal mask and the kernel
still computes every query against every key of the row, so a row of n examples of
length l costs (n l)^2 where the examples need n l^2; CPUs have no variable-length
(varlen) kernel to skip the off-diagonal blocks, and flex attention has no backward there.

``segment_sdpa`` is a transformers attention implementation that splits each row at
its restarts and runs causal sdpa on each example alone, so a row's attention costs
what its examples cost one by one and rows can be as long as memory allows, with no
padding. It is used only without a padding mask and without a KV cache (training and
validation, which is how ``rayfleet.training.loop`` calls the model); anything else
falls back to transformers' own sdpa with the mask it builds.

It serves the GPU as well: each example is a causal call with no mask, which sdpa runs
with its flash kernel (grouped-query heads included). The loop passes each row's
example boundaries as ``segment_bounds``, a CPU tensor worked out once per row, so no
layer waits on the GPU to find them; rows whose examples all have one length take one
batched call. The function is opaque to ``torch.compile`` (a graph break), so compiled
decoder layers neither specialize on nor recompile for each row's packing.

Shared prefixes: a row may hold the tokens its examples all begin with (a chat template's
system prompt, say) once, at its start (``rayfleet.training.data.packed_row``). Such an
example's own tokens start at position ``p > 0`` instead of 0; it then attends to the row's
first ``p`` tokens and to its own tokens, causally, exactly what it would see alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

SEGMENT_SDPA = "segment_sdpa"


def segment_bounds(position_ids) -> torch.Tensor:
    """[0, start of every later example, row length] of one row, as a CPU tensor.

    A new example starts where the position does not go up by 1.
    """
    position_ids = torch.as_tensor(position_ids, device="cpu").reshape(-1)
    restarts = (torch.diff(position_ids) != 1).nonzero().flatten().add(1)
    return torch.cat([torch.zeros(1, dtype=torch.long), restarts, torch.tensor([len(position_ids)])])


def causal_sdpa(query, key, value, dropout: float, scaling):
    return F.scaled_dot_product_attention(
        query, key, value, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=query.shape[1] != key.shape[1]
    )


MAX_PADDING = 0.25  # a padded batch holds at most this share more query slots than its examples have tokens


@dataclass(frozen=True)
class PaddedBatch:
    """Examples of one row laid out as one sdpa batch, each with its shared prefix in front of its own keys.

    ``queries`` [n, Lq]: the row positions of each example's own tokens; ``keys`` [n, Lk]: its
    prefix, then its own tokens; ``visible`` [n, 1, Lq, Lk]: what each query may attend to
    (the prefix, and its own tokens up to itself), or None for one example with no prefix
    (a plain causal call); ``own``: where the real queries sit in the flattened [n * Lq]
    batch. Padding slots point at position 0; a padded query sees that one key, so its
    softmax stays finite, and its output is dropped.
    """

    queries: torch.Tensor
    keys: torch.Tensor
    visible: torch.Tensor | None
    own: torch.Tensor

    def to(self, device: torch.device) -> PaddedBatch:
        tensors = (self.queries, self.keys, self.visible, self.own)
        return PaddedBatch(*(None if tensor is None else tensor.to(device) for tensor in tensors))


def length_groups(lengths: list[int], max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Example indices, longest first, grouped so that padding a group to its longest adds at most ``max_padding``."""
    groups: list[list[int]] = []
    group_tokens = 0
    for index in sorted(range(len(lengths)), key=lambda example: -lengths[example]):
        group = groups[-1] if groups else None
        if group and lengths[group[0]] * (len(group) + 1) <= (1 + max_padding) * (group_tokens + lengths[index]):
            group.append(index)
            group_tokens += lengths[index]
        else:
            groups.append([index])
            group_tokens = lengths[index]
    return groups


def padded_batch(members: list[int], bounds: tuple[int, ...], prefixes: tuple[int, ...]) -> PaddedBatch:
    """The ``PaddedBatch`` of the examples ``members`` of a row (indices into its bounds and prefixes)."""
    starts = [bounds[member] for member in members]
    lengths = [bounds[member + 1] - bounds[member] for member in members]
    shared = [prefixes[member] for member in members]
    query_width, key_width = max(lengths), max(prefix + length for prefix, length in zip(shared, lengths))
    queries = torch.zeros(len(members), query_width, dtype=torch.long)
    keys = torch.zeros(len(members), key_width, dtype=torch.long)
    visible = torch.zeros(len(members), query_width, key_width, dtype=torch.bool)
    own = []
    for slot, (start, length, prefix) in enumerate(zip(starts, lengths, shared)):
        queries[slot, :length] = torch.arange(start, start + length)
        keys[slot, :prefix] = torch.arange(prefix)
        keys[slot, prefix : prefix + length] = torch.arange(start, start + length)
        visible[slot, :length, : prefix + length] = torch.ones(length, prefix + length, dtype=torch.bool).tril(prefix)
        visible[slot, length:, 0] = True
        own.extend(range(slot * query_width, slot * query_width + length))
    plain_causal = len(members) == 1 and shared[0] == 0
    return PaddedBatch(queries, keys, None if plain_causal else visible.unsqueeze(1), torch.tensor(own))


@functools.lru_cache(maxsize=4)  # the layers of one row's passes reuse it; rows change every step
def shared_prefix_layout(
    bounds: tuple[int, ...], prefixes: tuple[int, ...], device: torch.device
) -> tuple[list[PaddedBatch], torch.Tensor]:
    """A row's examples as padded batches of similar length, and the order that puts their outputs back in the row's."""
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    batches = [padded_batch(members, bounds, prefixes) for members in length_groups(lengths)]
    positions = torch.cat([batch.queries.flatten()[batch.own] for batch in batches])
    return [batch.to(device) for batch in batches], torch.argsort(positions).to(device)


def batch_attention(query, key, value, batch: PaddedBatch, dropout: float, scaling) -> torch.Tensor:
    """Attention of one padded batch of a row's examples: [H, their tokens, D], in the batch's order."""
    if batch.visible is None:  # one example, no prefix: its own causal call, no mask, no padding
        own = batch.queries[0]
        return causal_sdpa(query[:, :, own], key[:, :, own], value[:, :, own], dropout, scaling)[0]
    output = F.scaled_dot_product_attention(
        query[0][:, batch.queries].transpose(0, 1), key[0][:, batch.keys].transpose(0, 1),
        value[0][:, batch.keys].transpose(0, 1), attn_mask=batch.visible, dropout_p=dropout, scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )  # fmt: skip
    return output.transpose(0, 1).flatten(1, 2)[:, batch.own]


def prefixed_row_attention(query, key, value, bounds: list[int], prefixes: list[int], dropout: float, scaling):
    """Attention within each example of one row whose examples share its first tokens ([1, H, L, D] in and out).

    Examples of similar length go through one masked sdpa call as a padded batch
    (``shared_prefix_layout``): a call per short example costs more in calls and copies
    than its attention, and one batch padded to a long example wastes more than both.
    """
    batches, order = shared_prefix_layout(tuple(bounds), tuple(prefixes), query.device)
    parts = [batch_attention(query, key, value, batch, dropout, scaling) for batch in batches]
    return torch.cat(parts, dim=1)[:, order].unsqueeze(0)


def row_attention(query, key, value, bounds: list[int], prefixes: list[int], dropout: float, scaling) -> torch.Tensor:
    """Attention within each example of one row ([1, H, L, D] in and out).

    ``prefixes`` holds, per example, how many of the row's first tokens it shares (its first position).
    """
    if any(prefixes):
        return prefixed_row_attention(query, key, value, bounds, prefixes, dropout, scaling)
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    if len(set(lengths)) == 1:  # examples of one length: a batch of them, one call

        def as_batch(tensor):
            return tensor[0].unflatten(1, (len(lengths), lengths[0])).transpose(0, 1)

        output = causal_sdpa(as_batch(query), as_batch(key), as_batch(value), dropout, scaling)
        return output.transpose(0, 1).flatten(1, 2).unsqueeze(0)
    parts = [
        causal_sdpa(query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], dropout, scaling)
        for start, end in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(parts, dim=2)


def example_prefixes(position_ids, bounds: torch.Tensor) -> torch.Tensor:
    """Each example's first position, as a CPU tensor: how many of the row's first tokens it shares (0: none).

    ``bounds`` are the row's ``segment_bounds``. The loop works both out on the CPU and passes them to
    the model as ``segment_bounds`` and ``segment_prefixes``.
    """
    starts = torch.as_tensor(position_ids, device="cpu").reshape(-1)[bounds[:-1]]
    if len(starts) and starts[0] != 0:
        raise ValueError(f"a packed row must start at position 0, not {int(starts[0])}")
    return starts


@torch.compiler.disable
def segment_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal attention example by example within each row (see the module docstring); [B, L, H, D] out."""
    position_ids, bounds = kwargs.get("position_ids"), kwargs.get("segment_bounds")
    prefixes = kwargs.get("segment_prefixes")
    one_pass = query.shape[2] == key.shape[2]
    if attention_mask is not None or (position_ids is None and bounds is None) or not one_pass:
        for name in ("segment_bounds", "segment_prefixes"):
            kwargs.pop(name, None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if bounds is not None and query.shape[0] != 1:
        raise ValueError("segment_bounds describes one row; pass position_ids for a batch of several")
    rows = []
    for row in range(query.shape[0]):
        row_bounds = bounds if bounds is not None else segment_bounds(position_ids[row])
        row_prefixes = prefixes if prefixes is not None else example_prefixes(position_ids[row], row_bounds)
        rows.append(row_attention(query[row : row + 1], key[row : row + 1], value[row : row + 1], row_bounds.tolist(),
                                  row_prefixes.tolist(), dropout, scaling))  # fmt: skip
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def padding_mask_only(attention_mask=None, **kwargs):
    """No mask without a padding mask (``segment_sdpa`` splits the rows itself); else sdpa's full mask."""
    return None if attention_mask is None else sdpa_mask(attention_mask=attention_mask, **kwargs)


AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_attention)
AttentionMaskInterface.register(SEGMENT_SDPA, padding_mask_only)
