"""Prefix sharing in the transformers engine: each distinct prefix runs once, its suffixes after it.

A batch of items, each split at its own prefix length (`reward_model.prefix_sharing`), runs as two
forward passes:
1. the distinct prefixes, right-padded, keeping every layer's keys and values (a prefix already in the
   engine's `PrefixKVCache`, from an earlier batch, is taken from there instead of run);
2. every item's suffix, right-padded, attending its own prefix's keys and values (selected per row,
   one layer at a time, never stored for the whole model) and, causally, its own earlier suffix
   tokens, at positions that continue its prefix. The reward is read at each item's last real token.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, DynamicCache

from reward_model.engines.prefix_cache import PrefixKVCache, PrefixStates
from reward_model.prefix_sharing import SplitPlan
from reward_model.tensors import pad_batch, uses_last_token_pooling


def supports_prefix_sharing(model: Any) -> bool:
    """Decoders pooled at the last token, with full (not sliding-window) causal attention everywhere."""
    if not uses_last_token_pooling(model):
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return False
    sliding = getattr(config, "sliding_window", None)
    return not sliding or getattr(config, "use_sliding_window", True) is False


class _PrefixCache(Cache):
    """The prefixes' keys and values, handed to each suffix row by layer; nothing from the suffix is kept.

    Each layer's prefix states come padded to prefix + suffix width, so one gather per layer gives every
    row its prefix and the room for its suffix, which is written in place: one copy of the prefix per row
    and layer, not two (a gather, then a concatenation)."""

    def __init__(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], rows: torch.Tensor, prefix_width: int
    ) -> None:
        super().__init__(layers=[])
        self.prefix_keys, self.prefix_values, self.rows = keys, values, rows
        self.prefix_width = prefix_width

    def update(  # type: ignore[override]
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.prefix_keys[layer_idx].index_select(0, self.rows)
        values = self.prefix_values[layer_idx].index_select(0, self.rows)
        keys[:, :, self.prefix_width :] = key_states
        values[:, :, self.prefix_width :] = value_states
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.prefix_width


def shared_prefix_logits(
    model: Any, plan: SplitPlan, pad_id: int, device: torch.device, cache: PrefixKVCache | None = None
) -> torch.Tensor:
    """One reward per item of `plan`, in order: prefixes once, then every suffix against its prefix."""
    base = getattr(model, model.base_model_prefix)
    keys, values, prefix_mask = _prefix_states(base, model.config, plan.prefixes, pad_id, device, cache)

    rows = torch.tensor(plan.rows, device=device)
    suffix = pad_batch(plan.suffixes, pad_id)
    suffix_mask = suffix.attention_mask.to(device)
    prefix_lengths = prefix_mask.sum(dim=1).index_select(0, rows)
    width = suffix_mask.shape[1]
    positions = prefix_lengths[:, None] + torch.arange(width, device=device)[None, :]
    dtype = keys[0].dtype
    mask = _suffix_attention_mask(prefix_mask.index_select(0, rows), suffix_mask, dtype)
    hidden = base(
        input_ids=suffix.input_ids.to(device),
        attention_mask=mask,
        position_ids=positions,
        past_key_values=_PrefixCache(_widened(keys, width), _widened(values, width), rows, keys[0].shape[-2]),
        use_cache=True,
    ).last_hidden_state
    last = suffix_mask.sum(dim=1) - 1
    pooled = hidden[torch.arange(hidden.shape[0], device=device), last]
    logits: torch.Tensor = model.score(pooled)
    return logits[:, 0]


def _prefix_states(
    base: Any,
    config: Any,
    prefixes: list[tuple[int, ...]],
    pad_id: int,
    device: torch.device,
    cache: PrefixKVCache | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Every prefix's keys and values per layer, [prefixes, kv_heads, longest, head_dim], right-padded,
    and the prefixes' attention mask: from the cache where it has them, from one pass for the rest."""
    found: list[PrefixStates | None] = [cache.get(p) if cache is not None else None for p in prefixes]
    missing = [i for i, states in enumerate(found) if states is None]
    keeping = cache is not None and cache.max_bytes > 0
    if missing:
        run = [prefixes[i] for i in missing]
        batch = pad_batch(run, pad_id)
        mask = batch.attention_mask.to(device)
        computed = DynamicCache(config=config)
        base(
            input_ids=batch.input_ids.to(device),
            attention_mask=mask,
            past_key_values=computed,
            use_cache=True,
        )
        keys = [_filled(getattr(layer, "keys", None)) for layer in computed.layers]
        values = [_filled(getattr(layer, "values", None)) for layer in computed.layers]
        del computed
        for row, i in enumerate(missing):
            if keeping or len(missing) < len(prefixes):
                n = len(prefixes[i])  # its real positions only: the rest were computed on padding
                entry = PrefixStates(
                    [k[row, :, :n].clone() for k in keys], [v[row, :, :n].clone() for v in values]
                )
                found[i] = entry
                if cache is not None:
                    cache.put(prefixes[i], entry)
        if len(missing) == len(prefixes):  # nothing came from the cache: the pass's tensors as they are
            return keys, values, mask
    entries = [entry for entry in found if entry is not None]
    width = max(len(p) for p in prefixes)
    lengths = torch.tensor([len(p) for p in prefixes], device=device)
    mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()

    def stacked(states: list[torch.Tensor]) -> torch.Tensor:
        heads, _, dim = states[0].shape
        padded = states[0].new_zeros((len(states), heads, width, dim))
        for row, t in enumerate(states):
            padded[row, :, : t.shape[1]] = t
        return padded

    layers = range(len(entries[0].keys))
    return (
        [stacked([e.keys[layer] for e in entries]) for layer in layers],
        [stacked([e.values[layer] for e in entries]) for layer in layers],
        mask,
    )


def _widened(states: list[torch.Tensor], extra: int) -> list[torch.Tensor]:
    """Each layer's [prefixes, heads, width, dim] states with `extra` more (zero) positions, for suffixes."""
    return [torch.nn.functional.pad(layer, (0, 0, 0, extra)) for layer in states]


def _filled(states: torch.Tensor | None) -> torch.Tensor:
    if states is None:
        raise RuntimeError("the prefix pass left a layer's cache empty")
    return states


def _suffix_attention_mask(
    prefix_mask: torch.Tensor, suffix_mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Additive 4D mask [B, 1, S, P + S]: a suffix token sees its prefix's real tokens and, causally, its
    own suffix's real tokens. Given as 4D, transformers uses it as it is, whatever the positions say."""
    width = suffix_mask.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=suffix_mask.device).tril()
    sees_suffix = causal[None, :, :] & suffix_mask.bool()[:, None, :]
    sees_prefix = prefix_mask.bool()[:, None, :].expand(-1, width, -1)
    allowed = torch.cat([sees_prefix, sees_suffix], dim=-1)[:, None, :, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)
