"""Typed inputs and results, mirroring the server's JSON. Unknown result fields are kept, not refused,
so a newer server never breaks an older client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """One chat turn."""

    role: str
    content: str


class Item(BaseModel):
    """Something to score: a prompt (a string or messages) and a response, or a whole conversation."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | list[Message] | None = None
    response: str | None = None
    messages: list[Message] | None = None

    def body(self) -> dict[str, Any]:
        """The item as the server's JSON."""
        return self.model_dump(exclude_none=True)


ItemLike = Item | Mapping[str, Any]
"""An `Item`, or a dict with `prompt` and `response`, or `messages`."""


def item_body(item: ItemLike) -> dict[str, Any]:
    """The JSON for one item, validated on this side so that a typo fails before any request."""
    return (item if isinstance(item, Item) else Item.model_validate(dict(item))).body()


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")


class ScoreResult(_Result):
    """`/score`: rewards in input order, with per-item uncertainty and truncation."""

    model: str
    rewards: list[float]
    stds: list[float]
    truncated: list[bool]
    num_tokens: list[int]
    normalized: bool
    aggregation: str
    member_rewards: dict[str, list[float]] | None = None

    @classmethod
    def merge(cls, parts: Sequence[ScoreResult]) -> ScoreResult:
        """Chunks' results, in chunk order, as one."""
        first = parts[0]
        members = None
        if first.member_rewards is not None:
            members = {
                k: [r for p in parts for r in (p.member_rewards or {})[k]] for k in first.member_rewards
            }
        return cls(
            model=first.model,
            rewards=[r for p in parts for r in p.rewards],
            stds=[r for p in parts for r in p.stds],
            truncated=[r for p in parts for r in p.truncated],
            num_tokens=[r for p in parts for r in p.num_tokens],
            normalized=first.normalized,
            aggregation=first.aggregation,
            member_rewards=members,
        )


class CompareResult(_Result):
    """`/compare`: which response is preferred, and the calibrated probability that A is better."""

    model: str
    reward_a: float
    reward_b: float
    prob_a_better: float
    preferred: str
    members_agreeing: int
    num_members: int
    temperature: float


class BestOfNResult(_Result):
    """`/best-of-n`: the best candidate and the ranking, best first."""

    model: str
    best_index: int
    best_response: str
    rewards: list[float]
    stds: list[float]
    ranking: list[int]


class GetRewardResult(_Result):
    """`/get_reward` (OpenRLHF): rewards in query order."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(default_factory=dict)


class Limits(_Result):
    """The server's limits; the client reads `max_items_per_request` to chunk."""

    max_items_per_request: int
    max_batch_size: int | None = None


class ServerInfo(_Result):
    """`/info`: what is served and how."""

    model: str
    ready: bool
    num_members: int
    limits: Limits
