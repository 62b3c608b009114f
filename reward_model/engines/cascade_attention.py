"""Suffix attention over shared prefixes without a copy of the prefix per item ("cascade" attention).

In a split batch (`shared_prefix`), every suffix token attends to its prefix's keys and values and,
causally, to its own suffix. Giving each item its own copy of the prefix's keys and values costs a
gather of prefix x items per layer (a GRPO batch of 64 items wrote 2.8 GB). Instead each layer runs:
1. for each distinct prefix, the queries of all the items that share it, stacked, against that prefix's
   keys and values, held once;
2. every item's queries against its own suffix, causally;
and merges the two by their log-sum-exp: softmax over [prefix, suffix] is the two partial softmaxes
weighted by exp(lse_part - lse_whole). An item's arithmetic is the same whichever items share its
prefix (queries never mix), so its reward does not depend on its group.

The model runs with the attention implementation `reward_cascade`: plain sdpa unless the forward call
carries `prefix_groups`, so every other pass (whole items, the prefix pass) is sdpa's, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ATTENTION = "reward_cascade"


@dataclass(frozen=True)
class PrefixGroups:
    """The prefixes a split batch attends to, and which rows attend to each."""

    keys: list[list[torch.Tensor]]
    """Per layer, per prefix: [kv_heads, prefix length, head_dim]."""
    values: list[list[torch.Tensor]]
    rows: list[torch.Tensor]
    """Per prefix: the batch rows (items) whose suffixes follow it."""


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    causal: bool,
    scale: float,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output [B, H, S, D] and its log-sum-exp [B, H, S] (float32); heads already matched.

    `fused` (the default on a CPU): torch's CPU flash kernel, which returns both. Otherwise the same in
    plain operations, on any device."""
    if fused if fused is not None else query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, causal, scale=scale
        )
        return out, lse.float()
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    if causal:
        blocked = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(blocked, float("-inf"))
    lse = scores.logsumexp(dim=-1)
    weights = torch.exp(scores - lse[..., None]).to(value.dtype)
    return torch.matmul(weights, value), lse


def cascade_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    prefix_groups: PrefixGroups | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: output [B, S, H, D]. With `prefix_groups`, the
    suffix rows attend to their prefixes (above); without, this is sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if prefix_groups is None:
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    _, heads, width, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    own_keys = key.repeat_interleave(group, dim=1) if group > 1 else key
    own_values = value.repeat_interleave(group, dim=1) if group > 1 else value
    suffix_out, suffix_lse = attend(query, own_keys, own_values, causal=True, scale=scale)

    layer = int(getattr(module, "layer_idx"))  # noqa: B009 (set on every transformers attention module)
    prefix_out = torch.empty_like(suffix_out)
    prefix_lse = torch.empty_like(suffix_lse)
    for rows, keys, values in zip(
        prefix_groups.rows, prefix_groups.keys[layer], prefix_groups.values[layer], strict=True
    ):
        n = rows.shape[0]
        if not n:
            continue
        # [n, heads, S, D] -> [1, kv_heads, n * group * S, D]: the query heads of one key head in a row
        stacked = query.index_select(0, rows).reshape(n, kv_heads, group * width, dim).transpose(0, 1)
        out, lse = attend(
            stacked.reshape(1, kv_heads, n * group * width, dim),
            keys[None],
            values[None],
            causal=False,
            scale=scale,
        )
        out = out.view(kv_heads, n, group * width, dim).transpose(0, 1)
        prefix_out[rows] = out.reshape(n, heads, width, dim)
        prefix_lse[rows] = lse.view(kv_heads, n, group * width).transpose(0, 1).reshape(n, heads, width)

    whole = torch.logaddexp(prefix_lse, suffix_lse)
    mixed = prefix_out.float().mul_(torch.exp(prefix_lse - whole)[..., None])
    mixed += suffix_out.float() * torch.exp(suffix_lse - whole)[..., None]
    return mixed.to(query.dtype).transpose(1, 2).contiguous(), None


def use_cascade_attention(model: Any) -> None:
    """Register `reward_cascade` (once) and make it the model's attention implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, cascade_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    model.set_attn_implementation(ATTENTION)
