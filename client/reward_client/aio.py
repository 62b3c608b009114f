"""The async client: chunking, failover across servers, retries with backoff, one deadline per call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from reward_client.errors import AllServersFailed, DeadlineExceeded, ServerError
from reward_client.policy import RetryPolicy, backoff_delay, parse_retry_after
from reward_client.pool import Server, ServerPool
from reward_client.types import (
    BestOfNResult,
    CompareResult,
    GetRewardResult,
    ItemLike,
    Message,
    ScoreResult,
    ServerInfo,
    item_body,
)

Result = TypeVar("Result", bound=BaseModel)
Prompt = str | Sequence[Message | Mapping[str, str]]


class AsyncRewardClient:
    """Calls one or more `reward-serve` servers; safe to share between tasks of one event loop.

    `urls`: one URL or several; each call goes to the least-loaded healthy one, and moves on when one
    fails. Large inputs are split into chunks of the server's `max_items_per_request` (read once from
    `/info`), sent concurrently (at most `max_concurrency` at a time) and returned in input order.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        api_key: str | None = None,
        policy: RetryPolicy | None = None,
        max_concurrency: int = 8,
        max_items_per_request: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.pool = ServerPool([urls] if isinstance(urls, str) else list(urls))
        self.policy = policy or RetryPolicy()
        self.max_concurrency = max_concurrency
        self._chunk = max_items_per_request
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_keepalive_connections=max_concurrency, max_connections=max_concurrency * 2)
        self._http = httpx.AsyncClient(headers=headers, limits=limits)

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    # -- the endpoints ------------------------------------------------------------------------------

    async def score(self, items: Sequence[ItemLike], **options: Any) -> ScoreResult:
        """Rewards for `items`, in order. `options`: normalize, aggregation, return_member_rewards,
        length_penalty, length_residual."""
        bodies = [item_body(i) for i in items]
        deadline = self._deadline()
        parts = await self._chunked(
            bodies,
            lambda chunk: self._post("/score", {"items": chunk, **options}, ScoreResult, deadline),
            deadline,
        )
        return ScoreResult.merge(parts)

    async def compare(
        self, prompt: Prompt, response_a: str, response_b: str, **options: Any
    ) -> CompareResult:
        """Which of two responses the model prefers, and P(a better than b)."""
        body = {"prompt": _prompt(prompt), "response_a": response_a, "response_b": response_b, **options}
        return await self._post("/compare", body, CompareResult, self._deadline())

    async def best_of_n(
        self, prompt: Prompt, responses: Sequence[str], top_k: int | None = None, **options: Any
    ) -> BestOfNResult:
        """The best response and the ranking, best first. Past the server's item limit the responses are
        scored in chunks and ranked here, with the same rule (reward, then input order)."""
        deadline = self._deadline()
        limit = await self._limit(deadline)
        if len(responses) <= limit:
            body = {"prompt": _prompt(prompt), "responses": list(responses), **options}
            if top_k is not None:
                body["top_k"] = top_k
            return await self._post("/best-of-n", body, BestOfNResult, deadline)
        scored = await self.score([{"prompt": _prompt(prompt), "response": r} for r in responses], **options)
        ranking = sorted(range(len(responses)), key=lambda i: (-scored.rewards[i], i))
        return BestOfNResult(
            model=scored.model,
            best_index=ranking[0],
            best_response=responses[ranking[0]],
            rewards=scored.rewards,
            stds=scored.stds,
            ranking=ranking[:top_k] if top_k else ranking,
        )

    async def get_reward(
        self, queries: Sequence[str], prompts: Sequence[str] | None = None
    ) -> GetRewardResult:
        """OpenRLHF's protocol: rewards for fully formatted queries (each starting with its prompt)."""
        if prompts is not None and len(prompts) != len(queries):
            raise ValueError(f"{len(prompts)} prompts for {len(queries)} queries")
        if not queries:
            return GetRewardResult(rewards=[], scores=[], extra_logs={})
        deadline = self._deadline()
        given: list[str | None] = list(prompts) if prompts is not None else [None] * len(queries)
        pairs = list(zip(queries, given, strict=True))

        async def send(chunk: list[tuple[str, str | None]]) -> GetRewardResult:
            body: dict[str, Any] = {"query": [q for q, _ in chunk]}
            if prompts is not None:
                body["prompts"] = [p for _, p in chunk]
            return await self._post("/get_reward", body, GetRewardResult, deadline)

        parts = await self._chunked(pairs, send, deadline)
        logs: dict[str, list[float]] = {}
        for part in parts:
            for key, values in part.extra_logs.items():
                logs.setdefault(key, []).extend(values)
        rewards = [r for p in parts for r in p.rewards]
        return GetRewardResult(rewards=rewards, scores=rewards, extra_logs=logs)

    async def info(self) -> ServerInfo:
        """`/info` of the least-loaded healthy server."""
        return await self._request("GET", "/info", None, ServerInfo, self._deadline())

    async def health(self) -> dict[str, bool]:
        """Each server's `/ready`, checked now, without retries: {url: ready}."""

        async def ready(server: Server) -> bool:
            try:
                response = await self._http.get(f"{server.url}/ready", timeout=self.policy.connect_timeout)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        states = await asyncio.gather(*(ready(s) for s in self.pool.servers))
        return {s.url: state for s, state in zip(self.pool.servers, states, strict=True)}

    # -- chunking -----------------------------------------------------------------------------------

    async def _limit(self, deadline: float) -> int:
        if self._chunk is None:
            info = await self._request("GET", "/info", None, ServerInfo, deadline)
            self._chunk = info.limits.max_items_per_request
        return self._chunk

    async def _chunked(
        self, inputs: Sequence[Any], send: Callable[[list[Any]], Awaitable[Result]], deadline: float
    ) -> list[Result]:
        size = await self._limit(deadline)
        chunks = [list(inputs[i : i + size]) for i in range(0, len(inputs), size)] or [[]]
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(chunk: list[Any]) -> Result:
            async with gate:
                return await send(chunk)

        return list(await asyncio.gather(*(one(c) for c in chunks)))

    # -- one request, with failover and retries -------------------------------------------------------

    def _deadline(self) -> float:
        return time.monotonic() + self.policy.deadline

    async def _post(self, path: str, body: dict[str, Any], result: type[Result], deadline: float) -> Result:
        return await self._request("POST", path, body, result, deadline)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None, result: type[Result], deadline: float
    ) -> Result:
        policy = self.policy
        errors: dict[str, BaseException] = {}
        failed: set[str] = set()  # servers that failed for this call, this round
        for attempt in range(policy.max_attempts):
            server = self.pool.pick(exclude=failed)
            if server is None:  # every server failed for this call, or is out: wait, then try them again
                wait = self.pool.next_return() or backoff_delay(policy, attempt, _retry_after(errors))
                await self._wait(wait, deadline, errors)
                failed.clear()
                server = self.pool.pick() or min(self.pool.servers, key=lambda s: s.out_until)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"deadline of {policy.deadline:g} s passed", errors)
            server.in_flight += 1
            try:
                response = await asyncio.wait_for(
                    self._http.request(
                        method, server.url + path, json=body, timeout=self._timeout(remaining)
                    ),
                    timeout=remaining,
                )
            except (TimeoutError, httpx.TransportError) as exc:
                errors[server.url] = exc
                failed.add(server.url)
                self.pool.failed(server)
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded(f"deadline of {policy.deadline:g} s passed", errors) from exc
                continue
            finally:
                server.in_flight -= 1
            if response.status_code < 400:
                self.pool.succeeded(server)
                return result.model_validate(response.json())
            error = _server_error(response, server.url)
            errors[server.url] = error
            if response.status_code not in policy.retry_statuses:
                raise error
            failed.add(server.url)
            if response.status_code in (502, 504):
                self.pool.failed(server)
        last = list(errors.values())[-1] if errors else None
        if isinstance(last, ServerError) and len(errors) == 1:
            raise last
        raise AllServersFailed(errors)

    async def _wait(self, seconds: float, deadline: float, errors: dict[str, BaseException]) -> None:
        if time.monotonic() + seconds >= deadline:
            raise DeadlineExceeded(f"deadline of {self.policy.deadline:g} s would pass while waiting", errors)
        await self._sleep(seconds)

    def _timeout(self, remaining: float) -> httpx.Timeout:
        p = self.policy
        return httpx.Timeout(
            connect=min(p.connect_timeout, remaining),
            read=min(p.read_timeout, remaining),
            write=min(p.read_timeout, remaining),
            pool=min(p.read_timeout, remaining),
        )


def _prompt(prompt: Prompt) -> str | list[dict[str, str]]:
    if isinstance(prompt, str):
        return prompt
    return [m.model_dump() if isinstance(m, Message) else dict(m) for m in prompt]


def _retry_after(errors: Mapping[str, BaseException]) -> float | None:
    waits = [
        e.retry_after for e in errors.values() if isinstance(e, ServerError) and e.retry_after is not None
    ]
    return max(waits) if waits else None


def _server_error(response: httpx.Response, url: str) -> ServerError:
    try:
        error = response.json()["error"]
        kind, message = str(error["type"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        kind, message = "http_error", response.text[:500]
    return ServerError(
        response.status_code, kind, message, url, parse_retry_after(response.headers.get("retry-after"))
    )
