"""Prefix sharing in the transformers engine: each distinct prefix runs once, its suffixes after it.

A batch of items, each split at its own prefix length (`reward_model.prefix_sharing`), runs as two
forward passes:
1. the distinct prefixes, right-padded, keeping every layer's keys and values (a prefix already in the
   engine's `PrefixKVCache`, from an earlier batch, is taken from there instead of run);
2. every item's suffix, right-padded, at positions that continue its prefix, attending its prefix's
   keys and values (held once per prefix, never copied per item: `cascade_attention`) and, causally,
   its own earlier suffix tokens. The reward is read at each item's last real token.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
from transformers import DynamicCache

from reward_model.engines.cascade_attention import PrefixGroups
from reward_model.engines.prefix_cache import PrefixKVCache, PrefixStates
from reward_model.prefix_sharing import SplitPlan
from reward_model.tensors import last_token_states, pad_batch, uses_last_token_pooling


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


def shared_prefix_logits(
    model: Any, plan: SplitPlan, pad_id: int, device: torch.device, cache: PrefixKVCache | None = None
) -> torch.Tensor:
    """One reward per item of `plan`, in order: prefixes once, then every suffix against its prefix."""
    base = getattr(model, model.base_model_prefix)
    states = _prefix_states(base, model.config, plan.prefixes, pad_id, device, cache)
    rows = torch.tensor(plan.rows, device=device)
    groups = PrefixGroups(
        keys=[[s.keys[layer] for s in states] for layer in range(len(states[0].keys))],
        values=[[s.values[layer] for s in states] for layer in range(len(states[0].values))],
        rows=[(rows == p).nonzero().flatten() for p in range(len(states))],
    )
    suffix = pad_batch(plan.suffixes, pad_id)
    width = suffix.input_ids.shape[1]
    prefix_lengths = torch.tensor([len(p) for p in plan.prefixes], device=device).index_select(0, rows)
    positions = prefix_lengths[:, None] + torch.arange(width, device=device)[None, :]
    # No mask: right padding and causal attention keep real tokens away from pads, whose outputs
    # are never read; each suffix's prefix comes from `groups`.
    last = suffix.attention_mask.to(device).sum(dim=1) - 1
    pooled = last_token_states(
        base,
        last,
        input_ids=suffix.input_ids.to(device),
        position_ids=positions,
        prefix_groups=groups,
        use_cache=False,
    )
    logits: torch.Tensor = model.score(pooled)
    return logits[:, 0]


def _prefix_states(
    base: Any,
    config: Any,
    prefixes: list[tuple[int, ...]],
    pad_id: int,
    device: torch.device,
    cache: PrefixKVCache | None,
) -> list[PrefixStates]:
    """Every prefix's keys and values per layer, [kv_heads, its length, head_dim]: from the cache where
    it has them, from one pass for the rest (right-padded, causal: a real token never sees a pad)."""
    found: list[PrefixStates | None] = [cache.get(p) if cache is not None else None for p in prefixes]
    missing = [i for i, states in enumerate(found) if states is None]
    if missing:
        batch = pad_batch([prefixes[i] for i in missing], pad_id)
        computed = _KeysAndValuesOnly(config=config)
        with contextlib.suppress(_LastLayerKept):
            base(input_ids=batch.input_ids.to(device), **{_cache_argument(base): computed}, use_cache=True)
        keys = [_filled(getattr(layer, "keys", None)) for layer in computed.layers]
        values = [_filled(getattr(layer, "values", None)) for layer in computed.layers]
        del computed
        keeping = cache is not None and cache.max_bytes > 0
        for row, i in enumerate(missing):
            n = len(prefixes[i])  # its real positions only: the rest were computed on padding
            entry = PrefixStates([k[row, :, :n] for k in keys], [v[row, :, :n] for v in values])
            if keeping:  # its own memory, not a view that keeps the whole padded pass alive
                assert cache is not None
                entry = PrefixStates([k.clone() for k in entry.keys], [v.clone() for v in entry.values])
                cache.put(prefixes[i], entry)
            found[i] = entry
    return [entry for entry in found if entry is not None]


class _LastLayerKept(Exception):
    """The prefix pass has every layer's keys and values: what it would compute next is never read."""


class _KeysAndValuesOnly(DynamicCache):
    """Keeps each layer's keys and values and ends the prefix pass once the last layer's are in: the
    prefix's own outputs are never read, so its last layer's attention and MLP (about 1/12 of a
    12-layer prefix pass) would be wasted."""

    def update(  # type: ignore[override]
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kept = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        if layer_idx == len(self.layers) - 1:
            raise _LastLayerKept
        return kept


def _cache_argument(base: Any) -> str:
    """transformers 5.25 renamed the forward's `past_key_values` to `cache` (the old name goes in 5.40)."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _filled(states: torch.Tensor | None) -> torch.Tensor:
    if states is None:
        raise RuntimeError("the prefix pass left a layer's cache empty")
    return states
