"""A reward-serve model as veRL's custom reward function (`reward.custom_reward_function`).

veRL's reward loop awaits an `async def compute_score(data_source, solution_str, ground_truth,
extra_info, **reward_kwargs)` per sample, concurrently; the server batches those requests itself
(and runs a prompt shared by a group's samples once). veRL passes the prompt only in `extra_info`:
its agent loop puts the chat messages in `extra_info["raw_prompt"]`. The server URL comes from
`reward_kwargs` (`url`, or `urls` for several) or from `$REWARD_SERVER_URL` (comma-separated).

    reward:
      custom_reward_function:
        path: pkg://reward_client.verl
        name: compute_score
        reward_kwargs: {url: "http://localhost:8000"}

A failure raises (after the client's retries and failover): it never turns into a silent 0.0.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from reward_client.aio import AsyncRewardClient

_clients: dict[tuple[int, tuple[str, ...]], AsyncRewardClient] = {}


def _urls(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    value = kwargs.get("urls") or kwargs.get("url") or os.environ.get("REWARD_SERVER_URL", "")
    urls = value.split(",") if isinstance(value, str) else list(value)
    urls = [u.strip() for u in urls if u.strip()]
    if not urls:
        raise ValueError("no reward server: pass reward_kwargs url (or urls), or set REWARD_SERVER_URL")
    return tuple(urls)


def client_for(urls: Sequence[str], **options: Any) -> AsyncRewardClient:
    """One client per event loop and server list, reused by every call on that loop."""
    key = (id(asyncio.get_running_loop()), tuple(urls))
    if key not in _clients:
        _clients[key] = AsyncRewardClient(list(urls), **options)
    return _clients[key]


def prompt_of(extra_info: Mapping[str, Any] | None) -> str | list[dict[str, str]]:
    """The prompt veRL hands over: `raw_prompt` (chat messages), else a `prompt` or `question` string."""
    info = extra_info or {}
    for key in ("raw_prompt", "prompt", "question"):
        value = info.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Sequence) and value and not isinstance(value, str):
            return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in value]
    raise ValueError("extra_info has no raw_prompt, prompt or question: the reward model needs the prompt")


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **reward_kwargs: Any,
) -> float:
    """The reward of one response to its prompt (`data_source` and `ground_truth` are not used)."""
    client = client_for(_urls(reward_kwargs), api_key=reward_kwargs.get("api_key"))
    result = await client.score([{"prompt": prompt_of(extra_info), "response": solution_str}])
    return float(result.rewards[0])
