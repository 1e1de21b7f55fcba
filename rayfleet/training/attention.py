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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

SEGMENT_SDPA = "segment_sdpa"


def segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of every example in one row: a new one starts where the position does not go up by 1."""
    restarts = (torch.diff(position_ids) != 1).nonzero().flatten().add(1).tolist()
    starts = [0, *restarts]
    return list(zip(starts, [*restarts, len(position_ids)]))


def segment_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal attention example by example within each row (see the module docstring); [B, L, H, D] out."""
    position_ids = kwargs.get("position_ids")
    one_pass = query.shape[2] == key.shape[2]
    if attention_mask is not None or position_ids is None or not one_pass:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    rows = []
    for row in range(query.shape[0]):
        parts = [
            F.scaled_dot_product_attention(
                query[row : row + 1, :, start:end], key[row : row + 1, :, start:end],
                value[row : row + 1, :, start:end], dropout_p=dropout, is_causal=True, scale=scaling,
                enable_gqa=query.shape[1] != key.shape[1],
            )  # fmt: skip
            for start, end in segments(position_ids[row])
        ]
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def padding_mask_only(attention_mask=None, **kwargs):
    """No mask without a padding mask (``segment_sdpa`` splits the rows itself); else sdpa's full mask."""
    return None if attention_mask is None else sdpa_mask(attention_mask=attention_mask, **kwargs)


AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_attention)
AttentionMaskInterface.register(SEGMENT_SDPA, padding_mask_only)
