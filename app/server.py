"""`create_app(settings)`: builds the FastAPI app; its lifespan loads the model in the background.

Nothing heavy runs at import time. `/health` answers while the model loads; `/ready` turns 200 once
every member is loaded and warmed up; a load failure is logged in one line and reported to `on_fatal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import openrlhf, scoring, system, vllm_compat
from app.api.auth import KeyRing, RequireApiKey, api_keys
from app.api.body import RequestBody
from app.api.errors import install_error_handlers
from app.metrics import Metrics
from app.service import RewardService
from app.settings import Settings
from reward_model.devices import cpu_has_native_bf16
from reward_model.errors import RewardError

log = logging.getLogger(__name__)


class InFlight:
    """Requests being answered right now; `idle` is set whenever there are none (the drain waits on it)."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


class RequestMetrics:
    """ASGI middleware counting requests and their latency by route template and status, and the
    requests in flight."""

    def __init__(self, app: ASGIApp, metrics: Metrics, in_flight: InFlight) -> None:
        self.app = app
        self.metrics = metrics
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        self.in_flight.enter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.in_flight.leave()
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)


async def _load(service: RewardService, settings: Settings, on_fatal: Callable[[str], None] | None) -> None:
    try:
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        assert settings.model is not None, "create_app needs settings.model set"
        log.info("loading %s", settings.model)
        await asyncio.to_thread(service.load, Path(settings.model))
        first = service.members[0].model
        log.info(
            "loaded %d model(s) (%s) on %s as %s",
            len(service.members),
            first.architecture,
            first.device,
            str(first.dtype).removeprefix("torch."),
        )
        if settings.dtype == "auto" and first.device.type == "cpu" and cpu_has_native_bf16():
            log.info(
                "this CPU computes bf16 natively: --dtype bfloat16 is faster, but then a reward moves with"
                " its batch by a few percent of the rewards' spread; float32 keeps the promise exactly"
            )
        if settings.warmup:
            log.info(
                "warming up%s", " (compiling the model first takes a while)" if first.engine.compiled else ""
            )
            await asyncio.to_thread(service.warmup)
        service.start()
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info(
            "ready: serving %s on http://%s:%d (API docs at /docs)", service.model_id, host, settings.port
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        message = exc.message if isinstance(exc, RewardError) else repr(exc)
        service.load_error = message
        log.error("startup failed: %s", message)
        if on_fatal is not None:
            on_fatal(message)


def create_app(
    settings: Settings,
    on_fatal: Callable[[str], None] | None = None,
    service_type: type[RewardService] = RewardService,
) -> FastAPI:
    """Build the app for these settings; the model loads when the lifespan starts.

    `on_fatal` is called with a one-line message if loading fails (the CLI uses it to exit).
    """
    metrics = Metrics()
    service = service_type(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_load(service, settings, on_fatal), name="model-loader")
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            await service.stop()

    app = FastAPI(
        title="Reward model server",
        version="0.1.0",
        summary="Batch-invariant reward scoring for RLHF loops and best-of-n reranking.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.in_flight = InFlight()
    install_error_handlers(app)
    app.include_router(scoring.router)
    app.include_router(openrlhf.router)
    app.include_router(vllm_compat.router)
    app.include_router(system.router)
    app.add_middleware(RequestBody, max_bytes=settings.max_body_bytes)
    keys = api_keys(settings)
    if keys:  # outside the body limit: a request without a key is refused before its body is read
        app.add_middleware(RequireApiKey, keys=KeyRing(keys), protect_probes=settings.auth_probes)
    app.add_middleware(RequestMetrics, metrics=metrics, in_flight=app.state.in_flight)
    if settings.cors_origins:  # outermost: a browser's preflight carries no API key
        origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
