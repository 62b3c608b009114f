"""Overload with a tiny queue: the excess gets 429 with Retry-After, every accepted request is
answered, and the service takes new work the moment the load drops. In process, gated by events: a
real uvicorn server on 127.0.0.1 with the tiny Llama model behind a gated runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.server import create_app
from app.service import RewardService
from app.settings import Settings
from tests.helpers import GatedRunner, GatedService, direct_pair_rewards, served, until

QUEUE = 4


def pair(i: int) -> tuple[str, str]:
    return f"question {i}", f"answer number {i}"


def body(*indices: int) -> dict:
    return {"items": [{"prompt": p, "response": r} for p, r in map(pair, indices)]}


async def test_overload_refuses_the_excess_answers_all_it_accepted_and_recovers_at_once(llama_dir: Path):
    settings = Settings(
        model=str(llama_dir), max_batch_size=1, max_wait_ms=0.0, max_queue_items=QUEUE, warmup=False
    )
    app = create_app(settings, service_type=GatedService)
    service: RewardService = app.state.service
    GatedRunner.reset()
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        try:
            await until(lambda: service.ready, "the service loaded")
            batcher = service.members[0].batcher
            first = asyncio.create_task(client.post("/score", json=body(0)))
            await asyncio.to_thread(GatedRunner.entered.wait, 30)  # request 0 holds the model
            burst = [asyncio.create_task(client.post("/score", json=body(i))) for i in range(1, 21)]
            refused = service.metrics.rejected
            await until(
                lambda: batcher.accepted_waiting + refused._value.get() == 20,
                "every request queued or refused",
            )
            accepted = batcher.accepted_waiting
            assert QUEUE <= accepted <= QUEUE + 1  # the queue, and perhaps one picked as the next batch
            await until(lambda: sum(t.done() for t in burst) == 20 - accepted, "the refusals arrived")
            for task in burst:  # the refused ones are answered while the model is still held
                if task.done():
                    response = task.result()
                    assert response.status_code == 429 and response.headers["retry-after"] == "1"
                    assert response.json()["error"]["type"] == "overloaded"
        finally:
            GatedRunner.gate.set()
        responses = [await first, *[await t for t in burst]]
        answered = [(i, r) for i, r in enumerate(responses) if r.status_code == 200]
        assert len(answered) == 1 + accepted  # nothing accepted is lost
        expected = direct_pair_rewards(llama_dir, [pair(i) for i, _ in answered])
        assert [r.json()["rewards"][0] for _, r in answered] == pytest.approx(expected, abs=1e-4)
        # The load is gone: a request as large as the whole queue is taken at once, no cool-down.
        again = await client.post("/score", json=body(*range(QUEUE)))
        assert again.status_code == 200 and len(again.json()["rewards"]) == QUEUE
