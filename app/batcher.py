"""DynamicBatcher: one queue and one background task per model copy, pooling items from all requests.

Contract (as in Ray Serve's batch queue, capped by tokens as in TEI):
- a batch is capped by item count and by a token budget, where cost = items x longest item;
- items that may share a prefix (`prefix_sharing`) carry its length; a batch takes in the other
  waiting items with the same prefix ids, from any request, within its caps, and the prefix counts
  once against the budget (`batch_policy`);
- the oldest waiting item is always in the next batch (no starvation), and the rest of the batch is
  the items closest to it in length; a batch stops growing before more than `max_padding_ratio` of
  its tokens would be padding, so a mixed queue becomes several homogeneous batches;
- while the model is idle the batcher waits at most `max_wait_s` for a batch to fill, and only when
  requests arrive closer together than that (a lone client is never held back); while the model is
  busy, the next batch is picked as soon as a full one is waiting and runs the moment the model frees;
- items whose future was cancelled (the client went away) are dropped before compute;
- the queue is bounded: `submit` raises `Overloaded` instead of growing;
- a failing batch is split in halves and retried, so only items that fail on their own get an error;
  an out-of-memory error also lowers the token budget until batches run clean again (`MemoryBackoff`);
- `forward` returns exactly one reward per input, or the whole batch fails loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.batch_policy import (
    MemoryBackoff,
    Waiting,
    add_prefix_groups,
    batch_cost,
    choose_batch,
    idle_wait,
    is_full,
    is_out_of_memory,
)
from app.errors import NotReady, Overloaded
from app.metrics import Metrics
from reward_model.errors import InferenceFailed, NonFiniteReward

log = logging.getLogger(__name__)


class BatchRunner(Protocol):
    """What the batcher needs from a model: one reward per token-id sequence, in order."""

    def forward(self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int]) -> list[float]: ...

    def take_prefix_cache_hits(self) -> tuple[int, int]:
        """Prompts taken from the model's cache of earlier batches since the last call, and their tokens."""
        ...


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's reward and where its time went."""

    reward: float
    queue_seconds: float
    inference_seconds: float


@dataclass(slots=True)
class _Entry:
    tokens: Sequence[int]
    future: asyncio.Future[ItemResult]
    enqueued: float = field(default_factory=time.monotonic)
    prefix: int = 0
    key: Hashable = None

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def waiting(self) -> Waiting:
        return Waiting(len(self.tokens), self.prefix, self.key)


class DynamicBatcher:
    """Pools items from concurrent requests into token-budgeted, length-grouped batches for one runner."""

    def __init__(
        self,
        runner: BatchRunner,
        *,
        name: str = "model",
        max_batch_size: int = 64,
        max_batch_tokens: int = 16384,
        max_wait_s: float = 0.002,
        max_queue_items: int = 4096,
        max_padding_ratio: float = 1.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if max_batch_size < 1 or max_batch_tokens < 1 or max_queue_items < 1:
            raise ValueError("batch and queue limits must be positive")
        self.runner = runner
        self.name = name
        self.max_batch_size = max_batch_size
        self.memory = MemoryBackoff(max_batch_tokens)
        self.max_wait_s = max_wait_s
        self.max_queue_items = max_queue_items
        self.max_padding_ratio = max_padding_ratio
        self.metrics = metrics or Metrics()
        self.metrics.batch_token_limit.labels(name).set(max_batch_tokens)
        self._clock = clock
        self._sleep = sleep  # the clock and the timer are injected together, so tests control time
        self._pending: list[_Entry] = []
        self._last_submit = -math.inf
        self._arrival_gap = math.inf  # seconds between the two latest requests
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._picked: list[_Entry] = []
        self.draining = asyncio.Event()
        """Set by `stop` once nothing new is taken, while the batch in the model finishes."""
        # One thread owns the model: forward passes never overlap and never block the event loop.
        # Pass the thread that loaded and warmed the model up: on CPU, every thread that runs torch
        # keeps its own OpenMP team, and a second team makes every later forward pass slower.
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")

    @property
    def max_batch_tokens(self) -> int:
        """The token budget in force: the configured one, or less after an out-of-memory error."""
        return self.memory.current

    @property
    def accepted_waiting(self) -> int:
        """Items accepted and not yet in the model: queued, or picked for the next batch."""
        return len(self._pending) + len(self._picked)

    @property
    def queue_depth(self) -> int:
        """Items waiting, cancelled ones included until the next batch purges them."""
        return len(self._pending)

    def start(self) -> None:
        """Start the background task; call from inside the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop the loop, let the batch in the model finish, fail whatever still waits, free the thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.draining.set()
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)
        for entry in [*self._picked, *self._pending]:
            if not entry.future.done():
                entry.future.set_exception(NotReady("the server is shutting down"))
        self._picked, self._pending = [], []
        self._update_depth()
        self._executor.shutdown(wait=True)

    def submit(
        self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int] | None = None
    ) -> list[asyncio.Future[ItemResult]]:
        """Queue all of a request's items, or none of them (Overloaded) when the queue is full.

        `prefix_lengths[i]` > 0: item i may share its first that many tokens with other items."""
        if len(self._pending) + len(sequences) > self.max_queue_items:
            self._purge_cancelled()
            if len(self._pending) + len(sequences) > self.max_queue_items:
                self.metrics.rejected.inc(len(sequences))
                waiting, limit = len(self._pending), self.max_queue_items
                raise Overloaded(f"queue full: {waiting} items waiting, limit {limit}; retry later")
        now = self._clock()
        self._arrival_gap, self._last_submit = now - self._last_submit, now
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[ItemResult]] = []
        for tokens, prefix in zip(sequences, prefix_lengths or [0] * len(sequences), strict=True):
            future: asyncio.Future[ItemResult] = loop.create_future()
            key = hash(tuple(tokens[:prefix])) if prefix else None
            self._pending.append(_Entry(tokens, future, self._clock(), prefix, key))
            futures.append(future)
        self._update_depth()
        self._arrived.set()
        return futures

    # -- the background task ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                await self._wait_arrival()
                continue
            busy = self._inflight is not None and not self._inflight.done()
            full = is_full([e.length for e in self._pending], self.max_batch_size, self.max_batch_tokens)
            if busy and not full:
                await self._wait_arrival(also=self._inflight)
                continue
            if not busy and not full:
                remaining = idle_wait(
                    self._clock(), self._pending[0].enqueued, self._arrival_gap, self.max_wait_s
                )
                if remaining > 0:
                    await self._wait_arrival(wait_s=remaining)
                    continue
            self._picked = self._take_batch()
            if self._inflight is not None:
                # The next batch is picked; it runs the moment the model is free. Shielded so that
                # stopping the loop never cancels a forward pass halfway.
                await asyncio.shield(self._inflight)
                self._picked = self._join_prefix_groups(self._picked)
            batch, self._picked = self._picked, []
            self._inflight = asyncio.create_task(self._run(batch)) if batch else None

    async def _wait_arrival(
        self, wait_s: float | None = None, also: asyncio.Task[None] | None = None
    ) -> None:
        self._arrived.clear()
        own: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._arrived.wait())]
        if wait_s is not None:
            own.append(asyncio.ensure_future(self._sleep(wait_s)))
        waitables: set[asyncio.Future[Any]] = set(own)
        if also is not None:
            waitables.add(also)
        try:
            await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in own:
                future.cancel()

    def _purge_cancelled(self) -> None:
        self._pending = [e for e in self._pending if not e.future.done()]
        self._update_depth()

    def _take_batch(self) -> list[_Entry]:
        self._purge_cancelled()
        nearest = choose_batch(
            [e.length for e in self._pending],
            self.max_batch_size,
            self.max_batch_tokens,
            self.max_padding_ratio,
        )
        queue = [e.waiting for e in self._pending]
        chosen = set(add_prefix_groups(nearest, queue, self.max_batch_size, self.max_batch_tokens))
        batch = [e for i, e in enumerate(self._pending) if i in chosen]
        self._pending = [e for i, e in enumerate(self._pending) if i not in chosen]
        self._update_depth()
        return batch

    def _join_prefix_groups(self, picked: list[_Entry]) -> list[_Entry]:
        """Items that arrived while the picked batch waited for the model, and share a prefix with it,
        join it (a prompt's other samples, sent in requests of their own)."""
        if not any(e.prefix for e in picked) or not self._pending:
            return picked
        queue = [e.waiting for e in picked] + [e.waiting for e in self._pending]
        chosen = set(add_prefix_groups(range(len(picked)), queue, self.max_batch_size, self.max_batch_tokens))
        joining = {i - len(picked) for i in chosen if i >= len(picked)}
        if not joining:
            return picked
        joined = [e for i, e in enumerate(self._pending) if i in joining]
        self._pending = [e for i, e in enumerate(self._pending) if i not in joining]
        self._update_depth()
        return picked + joined

    async def _run(self, entries: list[_Entry]) -> None:
        live = [e for e in entries if not e.future.done()]  # clients that left while it was queued
        if not live:
            return
        started = self._clock()
        real = sum(e.length for e in live)
        padded = batch_cost([e.waiting for e in live])
        loop = asyncio.get_running_loop()
        try:
            rewards = await loop.run_in_executor(
                self._executor, self.runner.forward, [e.tokens for e in live], [e.prefix for e in live]
            )
            if len(rewards) != len(live):
                raise RuntimeError(f"runner returned {len(rewards)} rewards for {len(live)} inputs")
        except Exception as exc:
            if is_out_of_memory(exc):
                self.memory.out_of_memory(padded)
                self.metrics.out_of_memory.labels(self.name).inc()
                self.metrics.batch_token_limit.labels(self.name).set(self.memory.current)
            if len(live) == 1:
                log.warning("item failed on its own in %s: %r", self.name, exc)
                if not live[0].future.done():
                    live[0].future.set_exception(
                        InferenceFailed(f"model {self.name!r} failed on this item: {exc}")
                    )
                return
            log.warning("batch of %d failed in %s (%r); retrying in halves", len(live), self.name, exc)
            middle = len(live) // 2
            await self._run(live[:middle])
            await self._run(live[middle:])
            return
        elapsed = self._clock() - started
        self.memory.ran_clean()
        m, member = self.metrics, self.name
        m.batch_token_limit.labels(member).set(self.memory.current)
        m.inference_duration.labels(member).observe(elapsed)
        m.batch_items.labels(member).observe(len(live))
        m.batch_tokens.labels(member).observe(padded)
        m.padding_ratio.labels(member).observe(1.0 - real / padded)
        m.real_tokens.labels(member).inc(real)
        m.padded_tokens.labels(member).inc(padded)
        self._observe_sharing(live)
        for entry, reward in zip(live, rewards, strict=True):
            m.queue_wait.labels(member).observe(started - entry.enqueued)
            if entry.future.done():
                continue
            if not math.isfinite(reward):
                m.nonfinite.labels(member).inc()
                entry.future.set_exception(
                    NonFiniteReward(f"model {self.name!r} produced a non-finite reward")
                )
            else:
                entry.future.set_result(ItemResult(reward, started - entry.enqueued, elapsed))

    def _observe_sharing(self, live: list[_Entry]) -> None:
        groups: dict[Hashable, list[_Entry]] = {}
        for entry in live:
            if entry.prefix:
                groups.setdefault(entry.key, []).append(entry)
        m, member = self.metrics, self.name
        for group in groups.values():
            m.prefix_group_size.labels(member).observe(len(group))
            if len(group) > 1:
                m.shared_prefix_items.labels(member).inc(len(group))
                m.prefix_tokens_saved.labels(member).inc(group[0].prefix * (len(group) - 1))
        hits, tokens = self.runner.take_prefix_cache_hits()  # prompts not run at all in this batch
        m.prefix_cache_hits.labels(member).inc(hits)
        m.prefix_tokens_saved.labels(member).inc(tokens)

    def _update_depth(self) -> None:
        self.metrics.queue_depth.labels(self.name).set(len(self._pending))
