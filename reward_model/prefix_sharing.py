"""Shared-prompt scoring: where each item splits into a prefix that other items may share, and a suffix.

A decoder (causal attention) computes a prompt's keys and values from the prompt alone, so they are
the same for every response that follows it. The transformers engine runs each distinct prefix of a
batch once and every suffix against it (`engines.shared_prefix`); vLLM shares through its own prefix
cache; encoders attend both ways and cannot share.

Where an item is split is a property of the item alone (its prompt boundary, found by `formatting`),
so its computation, and its reward, do not depend on what else is in the batch. Only already
formatted text with no prompt given falls back to the longest token prefix of its request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reward_model.formatting import EncodedInput

MIN_SHARED_PREFIX = 16
"""Shorter prompts are not split: their own pass would cost more than sharing them saves."""


def split_points(encoded: Sequence[EncodedInput]) -> list[int]:
    """Where each item splits: its prompt boundary in tokens, or, for items that do not know theirs
    (already formatted text), the longest token prefix they all share. 0 means run it whole.

    Each item keeps at least one token after the split, where its reward is read."""
    unknown = [e.input_ids for e in encoded if e.prompt_tokens is None]
    common = common_prefix_length(unknown) if len(unknown) > 1 else 0
    points = []
    for e in encoded:
        length = min(common if e.prompt_tokens is None else e.prompt_tokens, len(e.input_ids) - 1)
        points.append(length if length >= MIN_SHARED_PREFIX else 0)
    return points


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading token ids every sequence has in common."""
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for position in range(shortest):
        token = first[position]
        if any(s[position] != token for s in sequences):
            return position
    return shortest


@dataclass(frozen=True)
class SplitPlan:
    """How a batch of split items runs: distinct prefixes, and for each item its prefix row and suffix."""

    prefixes: list[tuple[int, ...]]
    rows: list[int]
    """For each item, the index of its prefix in `prefixes`."""
    suffixes: list[list[int]]


def plan_split(sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int]) -> SplitPlan:
    """Group items by their exact prefix ids (first seen, first row); every suffix keeps >= 1 token."""
    index: dict[tuple[int, ...], int] = {}
    rows, suffixes = [], []
    for seq, length in zip(sequences, prefix_lengths, strict=True):
        if not 0 < length < len(seq):
            raise ValueError(f"prefix length {length} must leave 1 to {len(seq) - 1} tokens of a sequence")
        rows.append(index.setdefault(tuple(seq[:length]), len(index)))
        suffixes.append(list(seq[length:]))
    return SplitPlan(list(index), rows, suffixes)
