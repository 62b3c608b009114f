"""Retry, backoff and timeout rules, as plain data and pure functions.

Retried: connection errors and 408, 429, 502, 503, 504, honouring `Retry-After`. Never any other 4xx:
the same request would fail the same way. Backoff is exponential with full jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a call tries before it gives up, and how long it may take in all."""

    max_attempts: int = 6
    """Requests one call may send, across all servers, the first included."""
    backoff_base: float = 0.2
    """Seconds; attempt k waits up to base x 2^k (full jitter), capped by `backoff_max`."""
    backoff_max: float = 10.0
    deadline: float = 300.0
    """Seconds a whole call may take, retries, waits and chunks included."""
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.deadline <= 0 or self.backoff_base < 0:
            raise ValueError("max_attempts >= 1, deadline > 0 and backoff_base >= 0 are required")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds (the HTTP-date form is not used here)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def backoff_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rng: random.Random | None = None
) -> float:
    """Seconds to wait before attempt `attempt + 1`: the server's `Retry-After` when it sent one,
    else a full-jitter draw from [0, min(backoff_max, base x 2^attempt)]."""
    if retry_after is not None:
        return retry_after
    ceiling = min(policy.backoff_max, policy.backoff_base * (2**attempt))
    return (rng or random).uniform(0.0, ceiling)
