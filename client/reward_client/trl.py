"""A reward-serve model as a TRL reward function (GRPOTrainer, RLOOTrainer, OnlineDPOTrainer).

    from reward_client.trl import async_reward_function
    trainer = GRPOTrainer(..., reward_funcs=[async_reward_function("http://localhost:8000")])

TRL calls `reward_func(prompts=..., completions=..., completion_ids=..., trainer_state=...,
log_metric=..., **dataset_columns)` and takes one `float | None` per completion. A plain `async def`
(what `async_reward_function` returns) runs concurrently with TRL's other async reward functions on
its event loop; `reward_function` is the blocking one, for trainers that do not await.

Both take plain strings (a prompt, a completion) and conversations (a prompt as a list of messages,
a completion as `[{"role": "assistant", "content": ...}]`); the reward model formats them itself. An
empty completion gets a reward like any other. Latency and failures go to `log_metric`, when TRL
passes it, as `<name>/latency_s` and `<name>/failures`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal

from reward_client.aio import AsyncRewardClient
from reward_client.errors import RewardClientError
from reward_client.sync import RewardClient

RewardFunction = Callable[..., list[float | None]]
AsyncRewardFunction = Callable[..., Coroutine[Any, Any, list[float | None]]]
OnFailure = Literal["raise", "none"]


def to_items(prompts: Sequence[Any], completions: Sequence[Any]) -> list[dict[str, Any]]:
    """TRL's prompts and completions as reward-serve items, in order."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    return [
        {"prompt": _prompt(p), "response": _completion(c)} for p, c in zip(prompts, completions, strict=True)
    ]


def _prompt(prompt: Any) -> str | list[dict[str, str]]:
    if isinstance(prompt, str):
        return prompt
    return [{"role": str(m["role"]), "content": _text(m.get("content"))} for m in prompt]


def _completion(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    turns = [m for m in completion if m.get("role", "assistant") == "assistant"]
    return "".join(_text(m.get("content")) for m in turns)


def _text(content: Any) -> str:
    """Message content as text: a string, None (a tool-call turn), or multimodal parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))


def async_reward_function(
    urls: str | Sequence[str],
    *,
    name: str = "reward_server",
    on_failure: OnFailure = "raise",
    **client_options: Any,
) -> AsyncRewardFunction:
    """An `async def` reward function over one or more servers; `client_options` go to
    `AsyncRewardClient` (api_key, policy, max_concurrency). The client is made on first use, inside
    the event loop that runs it. `on_failure="none"` turns a call that failed on every server into
    `None` rewards (TRL then ignores those completions) instead of raising."""
    clients: list[AsyncRewardClient] = []

    def client() -> AsyncRewardClient:
        if not clients:
            clients.append(AsyncRewardClient(urls, **client_options))
        return clients[0]

    return _scorer(client, name, on_failure)


def reward_function(
    urls: str | Sequence[str],
    *,
    name: str = "reward_server",
    on_failure: OnFailure = "raise",
    **client_options: Any,
) -> RewardFunction:
    """The blocking twin of `async_reward_function`, for trainers that call reward functions directly:
    the same scorer, run on a `RewardClient`'s own event loop."""
    sync_client = RewardClient(urls, **client_options)
    score = _scorer(lambda: sync_client.async_client, name, on_failure)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return sync_client.run(score(prompts, completions, **kwargs))

    reward.__name__ = reward.__qualname__ = name
    return reward


def _scorer(client: Callable[[], AsyncRewardClient], name: str, on_failure: OnFailure) -> AsyncRewardFunction:
    async def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        started = time.perf_counter()
        try:
            result = await client().score(to_items(prompts, completions))
        except RewardClientError:
            _log(kwargs, name, started, failed=True)
            if on_failure == "none":
                return [None] * len(completions)
            raise
        _log(kwargs, name, started, failed=False)
        return list(result.rewards)

    reward.__name__ = reward.__qualname__ = name
    return reward


def _log(kwargs: Mapping[str, Any], name: str, started: float, *, failed: bool) -> None:
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        log_metric(f"{name}/latency_s", time.perf_counter() - started)
        log_metric(f"{name}/failures", 1.0 if failed else 0.0)
