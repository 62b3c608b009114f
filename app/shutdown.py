"""SIGTERM drains: readiness turns 503 at once, new requests get 503 with Retry-After, every request
already accepted is answered, and then the process exits 0.

uvicorn alone stops listening at the signal (so new requests are refused, not told to go elsewhere)
and re-raises the signal once it is done, so the process dies by it. `DrainingServer` keeps serving
503s while the requests in flight finish, up to `--drain-seconds`, then lets uvicorn shut down, and
exits normally. A second SIGTERM or SIGINT stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("app.server")


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose SIGTERM drains the app first (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.app: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._draining = False

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, without re-raising the signal at the end: a drained server exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        if self._loop is None or self.app is None:  # not serving yet: nothing to drain
            self.should_exit = True
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain)  # wakes the loop, wherever it waits

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self.drain(), name="drain")

    async def drain(self) -> None:
        """503 for new work; wait (bounded) for the requests in flight; then shut down."""
        service, in_flight = self.app.state.service, self.app.state.in_flight
        service.start_draining()
        log.info("shutting down: %d requests in flight get up to %g s", in_flight.count, self.drain_seconds)
        try:
            await asyncio.wait_for(in_flight.idle.wait(), self.drain_seconds)
        except TimeoutError:
            left, waited = in_flight.count, self.drain_seconds
            log.warning("shutting down with %d requests still in flight after %g s", left, waited)
        self.should_exit = True
