"""The batcher's decisions, as pure functions of what waits in its queue: no clock, no model, no loop.

Costs count padded tokens, as the model computes them. A split item (prefix sharing) costs its
suffix, plus its prefix once per distinct prefix in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


def is_full(lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int) -> bool:
    """True when the waiting items already fill a batch by count or by padded tokens."""
    if len(lengths) >= max_batch_size:
        return True
    return max(lengths) * len(lengths) >= max_batch_tokens


def idle_wait(now: float, oldest_enqueued: float, arrival_gap: float, max_wait_s: float) -> float:
    """Seconds to wait for a batch to fill while the model is idle; 0 or less means run now.

    Only dense traffic waits (the latest requests arrived closer together than `max_wait_s`), and
    never past the oldest item's deadline, so a lone client is never held back.
    """
    if arrival_gap >= max_wait_s:
        return 0.0
    return oldest_enqueued + max_wait_s - now


def choose_batch(
    lengths: Sequence[int], max_batch_size: int, max_batch_tokens: int, max_padding_ratio: float
) -> list[int]:
    """Queue positions (oldest first) of the next batch: the oldest item and its nearest neighbours
    in length, within the item cap, the token budget (items x longest) and the padding bound."""
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    lo = hi = order.index(0)
    real = lengths[0]
    while hi - lo + 1 < max_batch_size:
        count, longest = hi - lo + 1, lengths[order[hi]]
        # Padding each neighbour would add: a shorter one pads itself, a longer one pads everyone.
        left_cost = longest - lengths[order[lo - 1]] if lo > 0 else math.inf
        right_cost = count * (lengths[order[hi + 1]] - longest) if hi + 1 < len(order) else math.inf
        if left_cost == right_cost == math.inf:
            break
        take_left = left_cost <= right_cost
        added = lengths[order[lo - 1] if take_left else order[hi + 1]]
        padded = (count + 1) * max(longest, added)
        if padded > max_batch_tokens or 1.0 - (real + added) / padded > max_padding_ratio:
            break
        real += added
        if take_left:
            lo -= 1
        else:
            hi += 1
    return sorted(order[lo : hi + 1])


@dataclass(frozen=True)
class Waiting:
    """What the batch policy knows of a queued item."""

    length: int
    prefix: int = 0
    """Tokens of a prefix it may share (0: runs whole)."""
    key: Hashable = None
    """Equal for items whose prefixes are identical token ids."""


def batch_cost(items: Sequence[Waiting]) -> int:
    """Padded tokens the forward pass computes: whole items padded to the longest, each distinct prefix
    padded to the longest prefix, and the split items' suffixes padded to the longest suffix."""
    whole = [w.length for w in items if not w.prefix]
    split = [w for w in items if w.prefix]
    cost = len(whole) * max(whole, default=0)
    if split:
        prefixes = {w.key: w.prefix for w in split}
        cost += len(prefixes) * max(prefixes.values())
        cost += len(split) * max(w.length - w.prefix for w in split)
    return cost


def add_prefix_groups(
    chosen: Sequence[int], queue: Sequence[Waiting], max_batch_size: int, max_batch_tokens: int
) -> list[int]:
    """The chosen queue positions, plus the other waiting items that share a chosen item's prefix
    (oldest first) while the batch stays within its item cap and token budget: such an item costs
    only its suffix, and a prompt's responses that came in separate requests are scored together."""
    batch = list(chosen)
    keys = {queue[i].key for i in chosen if queue[i].prefix}
    if not keys:
        return batch
    taken = set(batch)
    for i, item in enumerate(queue):
        if len(batch) >= max_batch_size:
            break
        if i in taken or not item.prefix or item.key not in keys:
            continue
        if batch_cost([queue[j] for j in batch] + [item]) > max_batch_tokens:
            continue
        batch.append(i)
    return sorted(batch)


class MemoryBackoff:
    """The token budget in force after out-of-memory errors.

    An out-of-memory error on a batch sets the budget to half of that batch's cost (never above what it
    was); after `recover_after` batches in a row run clean, the budget doubles, up to the configured
    one. So a memory spike (a long-context burst, another process on the GPU) costs a few smaller
    batches, and the normal budget comes back by itself once memory allows it.
    """

    def __init__(self, max_batch_tokens: int, recover_after: int = 8) -> None:
        self.normal = max_batch_tokens
        self.current = max_batch_tokens
        self.recover_after = recover_after
        self._clean = 0

    def out_of_memory(self, batch_cost: int) -> None:
        self.current = max(1, min(self.current, batch_cost // 2))
        self._clean = 0

    def ran_clean(self) -> None:
        if self.current >= self.normal:
            return
        self._clean += 1
        if self._clean >= self.recover_after:
            self.current, self._clean = min(self.normal, self.current * 2), 0


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA, XPU), Python's MemoryError (CPU allocations), or a backend's
    RuntimeError that says so (MPS)."""
    if isinstance(error, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(error).__mro__):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
