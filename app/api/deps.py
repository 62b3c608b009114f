"""Shared handler plumbing: the service dependency and racing work against client disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Response

from app.api.errors import ClientDisconnected
from app.errors import NotReady
from app.service import RewardService, ScoreOutcome

T = TypeVar("T")


async def get_service(request: Request) -> RewardService:
    """The app's service, or 503 while it is still loading. A coroutine, so FastAPI runs it on the event
    loop: a plain function would cost every request a hop to a worker thread and back."""
    service: RewardService = request.app.state.service
    if service.draining:
        raise NotReady("the server is shutting down; retry on another replica")
    if not service.ready:
        raise NotReady("the model is still loading; poll /ready")
    return service


ReadyService = Annotated[RewardService, Depends(get_service)]


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run the work, cancelling it (and dropping its queued items) if the client goes away."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnected()
    return task.result()


def timing_headers(response: Response, outcome: ScoreOutcome) -> None:
    """Where the request's time went, for clients that profile their RLHF loop."""
    response.headers["X-Queue-Time-Ms"] = f"{outcome.queue_seconds * 1000:.3f}"
    response.headers["X-Inference-Time-Ms"] = f"{outcome.inference_seconds * 1000:.3f}"


def member_rewards(
    service: RewardService, outcome: ScoreOutcome, wanted: bool
) -> dict[str, list[float]] | None:
    """Each member's reward per item, keyed by member name, when the client asked for them."""
    if not wanted:
        return None
    return {m.name: [item.member_rewards[i] for item in outcome.items] for i, m in enumerate(service.members)}
