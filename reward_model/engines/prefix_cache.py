"""Prompt prefixes' keys and values kept across batches, least recently used first out, within a byte cap.

Within a batch each distinct prefix runs once (`shared_prefix`). When a prompt's items straddle two
batches (GRPO samples of one prompt arriving while a batch runs), the second batch would run the prompt
again; with this cache it finds the prompt's keys and values instead, as vLLM's prefix cache does.

An entry is exactly what the prefix pass produced for that prefix (its real positions only), so an
item's reward does not depend on whether its prefix came from the cache: the same keys and values feed
the same suffix computation. The weights never change while a model is served, so entries never go
stale; the cap bounds the memory, and `clear` gives it back (after an out-of-memory error).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

Prefix = tuple[int, ...]


@dataclass(frozen=True)
class PrefixStates:
    """One prefix's keys and values, per layer: [kv_heads, prefix length, head_dim] each."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        """Memory held by this entry."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class PrefixKVCache:
    """An LRU map from prefix token ids to their keys and values, holding at most `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._entries: OrderedDict[Prefix, PrefixStates] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        """Prefixes found here instead of run, since the start."""
        self.hit_tokens = 0
        """Their tokens: prompt tokens not recomputed thanks to the cache."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, prefix: Prefix) -> PrefixStates | None:
        """The prefix's states, now the most recently used; None if absent."""
        states = self._entries.get(prefix)
        if states is not None:
            self._entries.move_to_end(prefix)
            self.hits += 1
            self.hit_tokens += len(prefix)
        return states

    def put(self, prefix: Prefix, states: PrefixStates) -> None:
        """Keep the prefix's states, evicting the least recently used until they fit; an entry larger
        than the whole cap is not kept."""
        size = states.nbytes
        if size > self.max_bytes or prefix in self._entries:
            return
        while self.nbytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes
        self._entries[prefix] = states
        self.nbytes += size

    def clear(self) -> None:
        """Drop every entry (the memory goes back to the allocator)."""
        self._entries.clear()
        self.nbytes = 0
