"""A client that goes away has its queued items dropped before compute: in process, gated by events.

A real uvicorn server runs in the test's event loop on 127.0.0.1 with the tiny Llama model behind a
gated runner, so the test decides when each forward pass may finish; nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from app.server import create_app
from app.service import RewardService
from app.settings import Settings
from tests.helpers import GatedRunner, GatedService, served, until


async def test_a_client_that_disconnects_has_its_queued_items_dropped(llama_dir: Path):
    settings = Settings(model=str(llama_dir), max_batch_size=1, max_wait_ms=0.0, warmup=False)
    app = create_app(settings, service_type=GatedService)
    service: RewardService = app.state.service
    GatedRunner.reset()
    items = [{"prompt": f"question {i}", "response": "an answer"} for i in range(1000)]
    async with served(app) as url:
        try:
            await until(lambda: service.ready, "the service loaded")
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                leaving = asyncio.create_task(client.post("/score", json={"items": items}))
                await asyncio.to_thread(GatedRunner.entered.wait, 30)  # item 0 is in the model
                leaving.cancel()  # the client goes away: its connection closes
                with contextlib.suppress(asyncio.CancelledError):
                    await leaving
            disconnected = service.metrics.requests.labels("/score", "499")
            await until(lambda: disconnected._value.get() == 1, "the server saw the disconnect")
            batcher = service.members[0].batcher
            # Cancelled but still queued while the model is busy: item 0 runs, item 1 is picked as the next
            # batch, 998 wait behind it.
            assert batcher.queue_depth == 998
            GatedRunner.gate.set()
            await until(lambda: batcher.queue_depth == 0, "the cancelled items were purged")
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                still = await client.post("/score", json={"items": items[:2]})
            assert still.status_code == 200 and len(still.json()["rewards"]) == 2
            # Item 0, then the two new items: none of the 999 cancelled items reached the model.
            assert [len(b) for b in GatedRunner.batches] == [1, 1, 1]
        finally:
            GatedRunner.gate.set()
