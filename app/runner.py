"""RewardModelRunner: one opened model as the batcher runs it, on the thread that owns the model.

It adds what serving needs on top of `reward_model`'s plain forward pass: members on one device take
turns, an out-of-memory error gives the memory back before the batcher retries on half the batch,
and a warm-up runs the shapes `/ready` promises to be fast. It knows nothing about HTTP or queues.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from reward_model.loading import ScoringModel


class RewardModelRunner:
    """`forward(batch)` returns one raw reward per token id list, in order."""

    def __init__(self, model: ScoringModel, device_lock: threading.Lock | None = None) -> None:
        self.model = model
        # Ensemble members on one device take turns: concurrent forward passes would only fight
        # over the same cores or streams and make every member slower.
        self.device_lock = device_lock or threading.Lock()
        self._seen_hits = (0, 0)

    @property
    def pad_id(self) -> int:
        """The id batches are padded with."""
        return self.model.pad_id

    def forward(
        self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int] | None = None
    ) -> list[float]:
        """Score a batch of token id lists; one float per sequence, in order."""
        try:
            with self.device_lock:
                return self.model.forward(sequences, prefix_lengths)
        except torch.OutOfMemoryError:
            cache = self.model.engine.prefix_cache
            if cache is not None:
                cache.clear()  # kept prompts are the first memory to give back
            if self.model.device.type == "cuda":
                torch.cuda.empty_cache()  # so that the batcher's retry on half the batch has the memory back
            raise

    def take_prefix_cache_hits(self) -> tuple[int, int]:
        """Prefixes the engine found in its cache instead of running them, and their tokens, since the
        last call (the batcher counts them after each batch)."""
        cache = self.model.engine.prefix_cache
        if cache is None:
            return 0, 0
        hits, tokens = cache.hits - self._seen_hits[0], cache.hit_tokens - self._seen_hits[1]
        self._seen_hits = (cache.hits, cache.hit_tokens)
        return hits, tokens

    def warm_up(self, max_batch_size: int, max_batch_tokens: int) -> None:
        """One short input, then a full token budget of the longest inputs, so /ready means fast."""
        fmt = self.model.formatter
        rows = max(1, min(max_batch_size, max_batch_tokens // fmt.max_length))
        for batch in ([fmt.filler(1)], [fmt.filler(fmt.max_length)] * rows):
            self.forward(batch)
