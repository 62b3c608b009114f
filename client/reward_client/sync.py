"""The sync client: the async client on a private event loop in its own thread, same methods.

It works where an event loop already runs in the calling thread (notebooks, async frameworks that
call sync code), since its own loop never touches the caller's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from reward_client.aio import AsyncRewardClient, Prompt
from reward_client.types import (
    BestOfNResult,
    CompareResult,
    GetRewardResult,
    ItemLike,
    ScoreResult,
    ServerInfo,
)

T = TypeVar("T")


class RewardClient:
    """Blocking calls to one or more `reward-serve` servers; see `AsyncRewardClient` for the options."""

    def __init__(self, urls: str | Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="reward-client", daemon=True)
        self._thread.start()
        self._client = self.run(_make(urls, options))

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        if self._loop.is_closed():
            return
        self.run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def async_client(self) -> AsyncRewardClient:
        """The async client underneath; use it only through `run`."""
        return self._client

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's own event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def score(self, items: Sequence[ItemLike], **options: Any) -> ScoreResult:
        """Rewards for `items`, in order."""
        return self.run(self._client.score(items, **options))

    def compare(self, prompt: Prompt, response_a: str, response_b: str, **options: Any) -> CompareResult:
        """Which of two responses the model prefers, and P(a better than b)."""
        return self.run(self._client.compare(prompt, response_a, response_b, **options))

    def best_of_n(
        self, prompt: Prompt, responses: Sequence[str], top_k: int | None = None, **options: Any
    ) -> BestOfNResult:
        """The best response and the ranking, best first."""
        return self.run(self._client.best_of_n(prompt, responses, top_k, **options))

    def get_reward(self, queries: Sequence[str], prompts: Sequence[str] | None = None) -> GetRewardResult:
        """OpenRLHF's protocol: rewards for fully formatted queries."""
        return self.run(self._client.get_reward(queries, prompts))

    def info(self) -> ServerInfo:
        """`/info` of the least-loaded healthy server."""
        return self.run(self._client.info())

    def health(self) -> dict[str, bool]:
        """Each server's readiness, checked now."""
        return self.run(self._client.health())


async def _make(urls: str | Sequence[str], options: dict[str, Any]) -> AsyncRewardClient:
    return AsyncRewardClient(urls, **options)  # built inside its loop, where its connections live
