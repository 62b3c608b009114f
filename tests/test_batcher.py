"""DynamicBatcher contract: its decisions as pure functions, and its loop with a fake runner gated by
events and an injected clock and timer (no sleeps, no real-time windows, no model)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence

import pytest
import torch

from app.batcher import DynamicBatcher
from app.errors import NotReady, Overloaded
from reward_model.errors import InferenceFailed, NonFiniteReward
from tests.helpers import until

FAIL_TOKEN, NAN_TOKEN = 99, 77


class FakeRunner:
    """Reward = sum of token ids. Fails on FAIL_TOKEN, returns NaN on NAN_TOKEN, can be held at a gate."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[list[int]]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold:
            self.gate.set()

    def forward(self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int]) -> list[float]:
        self.batches.append([list(s) for s in sequences])
        self.entered.set()
        assert self.gate.wait(timeout=10), "test never opened the gate"
        if any(FAIL_TOKEN in s for s in sequences):
            raise RuntimeError("boom")
        return [math.nan if NAN_TOKEN in s else float(sum(s)) for s in sequences]

    def take_prefix_cache_hits(self) -> tuple[int, int]:
        return 0, 0

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10), "runner never started"
        self.entered.clear()


class FakeTime:
    """An injected clock and timer: time moves only when the test says, and a wait ends when released."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.waiting.set()
        await self.release.wait()


async def run_with(batcher: DynamicBatcher, coro):
    batcher.start()
    try:
        return await asyncio.wait_for(coro, timeout=10)
    finally:
        await batcher.stop()


def results(futures):
    return [f.result().reward for f in futures]


async def test_flushes_when_max_batch_size_is_reached_without_waiting():
    runner = FakeRunner()
    batcher = DynamicBatcher(runner, max_batch_size=4, max_wait_s=60.0)

    async def body():
        futures = batcher.submit([[1], [2], [3], [4]])
        await asyncio.gather(*futures)
        return results(futures)

    assert await run_with(batcher, body()) == [1.0, 2.0, 3.0, 4.0]
    assert runner.batches == [[[1], [2], [3], [4]]]


async def test_a_lone_request_on_an_idle_model_is_not_held_back():
    runner = FakeRunner()
    batcher = DynamicBatcher(runner, max_batch_size=100, max_wait_s=60.0)

    async def body():
        futures = batcher.submit([[5], [6]])
        await asyncio.gather(*futures)  # run_with gives up after 10 s: far less than the 60 s wait
        return results(futures)

    assert await run_with(batcher, body()) == [5.0, 6.0]
    assert runner.batches == [[[5], [6]]]


async def test_requests_arriving_together_wait_for_each_other_while_the_model_is_idle():
    runner, time = FakeRunner(), FakeTime()
    batcher = DynamicBatcher(runner, max_batch_size=3, max_wait_s=60.0, clock=time.clock, sleep=time.sleep)

    async def body():
        first = batcher.submit([[1]])
        second = batcher.submit([[2]])  # at the same instant as the first: traffic is dense
        await time.waiting.wait()  # the idle model waits for more, up to the oldest item's deadline
        assert time.waits == [60.0] and runner.batches == []
        third = batcher.submit([[3]])  # fills the batch: it runs without waiting out the deadline
        await asyncio.gather(*first, *second, *third)

    await run_with(batcher, body())
    assert runner.batches == [[[1], [2], [3]]]


async def test_a_waiting_partial_batch_is_flushed_at_the_deadline():
    runner, time = FakeRunner(), FakeTime()
    batcher = DynamicBatcher(runner, max_batch_size=100, max_wait_s=0.005, clock=time.clock, sleep=time.sleep)

    async def body():
        futures = [*batcher.submit([[5]]), *batcher.submit([[6]])]  # dense: the batcher waits...
        await time.waiting.wait()
        assert time.waits == [0.005] and runner.batches == []
        time.now = 0.005  # ...until the oldest item's deadline, and not a moment longer
        time.release.set()
        await asyncio.gather(*futures)
        return results(futures)

    assert await run_with(batcher, body()) == [5.0, 6.0]
    assert runner.batches == [[[5], [6]]]


async def test_items_that_arrive_while_the_model_is_busy_form_the_next_batch():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=8, max_wait_s=0.0)

    async def body():
        first = batcher.submit([[1]])
        await runner.wait_entered()
        later = [batcher.submit([[i]])[0] for i in (2, 3, 4)]
        assert batcher.queue_depth == 3 and not any(f.done() for f in later)
        runner.gate.set()
        await asyncio.gather(*first, *later)

    await run_with(batcher, body())
    assert runner.batches == [[[1]], [[2], [3], [4]]]


async def test_batches_respect_the_token_budget():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=64, max_batch_tokens=10, max_wait_s=0.0)

    async def body():
        first = batcher.submit([[1] * 5])
        await runner.wait_entered()
        rest = batcher.submit([[1] * 5, [1] * 5, [1] * 4, [1] * 3])
        runner.gate.set()
        await asyncio.gather(*first, *rest)

    await run_with(batcher, body())
    assert all(len(b) * max(len(s) for s in b) <= 10 for b in runner.batches)
    assert sorted(len(s) for b in runner.batches for s in b) == [3, 4, 5, 5, 5]


async def test_similar_lengths_are_grouped_and_the_oldest_item_goes_first():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=3, max_wait_s=0.0)
    short = [[1] * n for n in (1, 2, 3)]
    long = [[1] * n for n in (50, 51, 52)]

    async def body():
        blocker = batcher.submit([[0]])
        await runner.wait_entered()
        queued = batcher.submit([short[0], long[0], short[1], long[1], short[2], long[2]])
        runner.gate.set()
        await asyncio.gather(*blocker, *queued)

    await run_with(batcher, body())
    assert [sorted(len(s) for s in b) for b in runner.batches[1:]] == [[1, 2, 3], [50, 51, 52]]


async def test_a_mixed_queue_is_split_instead_of_padded():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=64, max_wait_s=0.0, max_padding_ratio=0.25)

    async def body():
        blocker = batcher.submit([[0]])
        await runner.wait_entered()
        # All fit one batch by count and tokens, but 10+10+40 padded to 40 would be 50% padding.
        queued = batcher.submit([[1] * 10, [1] * 40, [1] * 10, [1] * 36])
        runner.gate.set()
        await asyncio.gather(*blocker, *queued)

    await run_with(batcher, body())
    assert [sorted(len(s) for s in b) for b in runner.batches[1:]] == [[10, 10], [36, 40]]


async def test_a_failing_item_fails_alone_and_the_rest_of_its_batch_succeeds():
    runner = FakeRunner()
    batcher = DynamicBatcher(runner, max_batch_size=4, max_wait_s=60.0)

    async def body():
        futures = batcher.submit([[1], [FAIL_TOKEN], [3], [4]])
        return await asyncio.gather(*futures, return_exceptions=True)

    outcome = await run_with(batcher, body())
    assert [r.reward for r in (outcome[0], outcome[2], outcome[3])] == [1.0, 3.0, 4.0]
    assert isinstance(outcome[1], InferenceFailed) and "boom" in outcome[1].message
    assert runner.batches[0] == [[1], [FAIL_TOKEN], [3], [4]]  # then halves, then the failing item alone
    assert [[FAIL_TOKEN]] in runner.batches and [[3], [4]] in runner.batches


async def test_non_finite_rewards_become_errors_for_that_item_only():
    runner = FakeRunner()
    batcher = DynamicBatcher(runner, max_batch_size=2, max_wait_s=60.0)

    async def body():
        return await asyncio.gather(*batcher.submit([[NAN_TOKEN], [2]]), return_exceptions=True)

    bad, good = await run_with(batcher, body())
    assert isinstance(bad, NonFiniteReward) and good.reward == 2.0


async def test_cancelled_items_are_dropped_before_compute():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=8, max_wait_s=0.0)

    async def body():
        blocker = batcher.submit([[1]])
        await runner.wait_entered()
        gone, kept = batcher.submit([[42], [7]])
        gone.cancel()  # what a client disconnect does to its items
        runner.gate.set()
        await asyncio.gather(*blocker, kept)

    await run_with(batcher, body())
    assert runner.batches == [[[1]], [[7]]]


async def test_a_full_queue_refuses_whole_requests():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=1, max_wait_s=0.0, max_queue_items=3)

    async def body():
        blocker = batcher.submit([[1]])
        await runner.wait_entered()
        queued = batcher.submit([[2], [3]])
        with pytest.raises(Overloaded, match="queue full"):
            batcher.submit([[4], [5]])  # all or nothing: 2 + 2 > 3
        queued += batcher.submit([[6]])
        runner.gate.set()
        await asyncio.gather(*blocker, *queued)
        return results(queued)

    assert await run_with(batcher, body()) == [2.0, 3.0, 6.0]
    assert [4] not in [s for b in runner.batches for s in b]


async def test_stop_finishes_the_batch_in_the_model_and_fails_the_rest():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=1, max_wait_s=0.0)
    batcher.start()
    [in_model] = batcher.submit([[1]])
    await runner.wait_entered()
    picked, queued = batcher.submit([[2], [3]])  # [2] is picked as the next batch, [3] waits behind it
    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.wait_for(batcher.draining.wait(), 10)  # the loop is stopped; the model is still busy
    assert not in_model.done() and not stopping.done()
    runner.gate.set()
    await asyncio.wait_for(stopping, 10)
    assert in_model.result().reward == 1.0
    assert isinstance(picked.exception(), NotReady) and isinstance(queued.exception(), NotReady)
    assert runner.batches == [[[1]]]


async def test_a_prompts_sample_that_arrives_while_its_batch_waits_joins_it():
    runner = FakeRunner(hold=True)
    batcher = DynamicBatcher(runner, max_batch_size=8, max_batch_tokens=48, max_wait_s=0.0)
    a, b = [5] * 16, [6] * 16  # two prompts of 16 tokens
    a1, b1, a2, c = [*a, 1, 2], [*b, 1, 2], [*a, 3, 4, 5], [7] * 20

    async def body():
        blocker = batcher.submit([[0]])
        await runner.wait_entered()
        # 3 x 20 >= 48 tokens: a batch is full, so [a1, b1] is picked now, while the model is busy;
        # c (20 tokens more) would break the budget and waits.
        first = batcher.submit([a1, b1, c], [16, 16, 0])
        await until(lambda: batcher.queue_depth == 1, "[a1, b1] picked, c waiting")
        late = batcher.submit([a2], [16])  # a's second sample, in a request of its own
        runner.gate.set()
        await asyncio.gather(*blocker, *first, *late)

    await run_with(batcher, body())
    # a2 joined a1's batch at the moment the model freed: the prompt once, three suffixes (41 tokens)
    assert runner.batches == [[[0]], [a1, b1, a2], [c]]


class MemoryBoundRunner(FakeRunner):
    """Runs out of memory on a batch of more than `memory` padded tokens, as a GPU would."""

    def __init__(self, memory: int) -> None:
        super().__init__()
        self.memory = memory

    def forward(self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int]) -> list[float]:
        if len(sequences) * max(map(len, sequences)) > self.memory:
            self.batches.append([list(s) for s in sequences])
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(sequences, prefix_lengths)


async def test_out_of_memory_splits_the_batch_and_lowers_the_budget_until_memory_allows_it_again():
    runner = MemoryBoundRunner(memory=20)  # room for 5 items of 4 tokens
    batcher = DynamicBatcher(runner, max_batch_size=16, max_batch_tokens=64, max_wait_s=0.0)
    items = [[i, 0, 0, 0] for i in range(1, 17)]  # 16 items x 4 tokens: a 64-token batch

    async def round_of_16() -> list[float]:
        runner.batches.clear()
        return [r.reward for r in await asyncio.gather(*batcher.submit(items))]

    async def body():
        first = await round_of_16()  # 64 tokens fail, both halves of 32 fail, the quarters of 16 run
        assert first == [float(i) for i in range(1, 17)]  # every item answered, in order
        assert [len(b) for b in runner.batches] == [16, 8, 4, 4, 8, 4, 4]
        assert batcher.max_batch_tokens == 16  # half of the last batch that failed
        assert await round_of_16() == first
        assert [len(b) for b in runner.batches] == [4, 4, 4, 4]  # no more failures
        runner.memory = 1000  # the spike is over: every 8 clean batches, the budget doubles
        budgets = []
        for _ in range(6):
            assert await round_of_16() == first
            budgets.append(batcher.max_batch_tokens)
        assert budgets == sorted(budgets) and budgets[0] == 32 and budgets[-1] == 64
        assert await round_of_16() == first and [len(b) for b in runner.batches] == [16]
        return batcher.metrics.out_of_memory.labels("model")._value.get()

    assert await run_with(batcher, body()) == 3
