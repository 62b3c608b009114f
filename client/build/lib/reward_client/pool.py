"""Several servers as one: work goes to the least-loaded healthy one; a failed server sits out a while.

The pool only keeps counts and times; the client does the requests. A server taken out after a
failure is tried again once its time out has passed: its next request is the probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass


@dataclass
class Server:
    """One server's live state."""

    url: str
    in_flight: int = 0
    out_until: float = 0.0
    failures: int = 0
    """Consecutive failures; the time out doubles with each, up to the pool's maximum."""


class ServerPool:
    """Picks the healthy server with the fewest requests in flight (ties: the order given)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        time_out: float = 2.0,
        max_time_out: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is required")
        self.servers = [Server(url.rstrip("/")) for url in urls]
        self.time_out, self.max_time_out = time_out, max_time_out
        self._clock = clock

    def pick(self, exclude: Collection[str] = ()) -> Server | None:
        """The least-loaded server that is in and not excluded; None when there is none."""
        now = self._clock()
        candidates = [s for s in self.servers if s.url not in exclude and s.out_until <= now]
        return min(candidates, key=lambda s: s.in_flight, default=None)

    def next_return(self, exclude: Collection[str] = ()) -> float | None:
        """Seconds until the first server that is out (and not excluded) is back in; None if none is."""
        now = self._clock()
        outs = [s.out_until - now for s in self.servers if s.url not in exclude and s.out_until > now]
        return max(0.0, min(outs)) if outs else None

    def failed(self, server: Server) -> None:
        """Take a server out after a connection error or a server failure."""
        server.failures += 1
        pause = min(self.max_time_out, self.time_out * 2 ** (server.failures - 1))
        server.out_until = self._clock() + pause

    def succeeded(self, server: Server) -> None:
        """A server that answered is in again, with a clean record."""
        server.failures, server.out_until = 0, 0.0
