"""Client for reward-serve: typed sync and async calls, failover, retries, and RLHF integrations.

    from reward_client import RewardClient
    with RewardClient(["http://host-a:8000", "http://host-b:8000"]) as client:
        client.score([{"prompt": "2+2?", "response": "4"}]).rewards

Only httpx and pydantic are needed: no torch, transformers or server code.
"""

from reward_client.aio import AsyncRewardClient
from reward_client.errors import AllServersFailed, DeadlineExceeded, RewardClientError, ServerError
from reward_client.policy import RetryPolicy
from reward_client.sync import RewardClient
from reward_client.types import (
    BestOfNResult,
    CompareResult,
    GetRewardResult,
    Item,
    Message,
    ScoreResult,
    ServerInfo,
)

__all__ = [
    "AllServersFailed",
    "AsyncRewardClient",
    "BestOfNResult",
    "CompareResult",
    "DeadlineExceeded",
    "GetRewardResult",
    "Item",
    "Message",
    "RetryPolicy",
    "RewardClient",
    "RewardClientError",
    "ScoreResult",
    "ServerError",
    "ServerInfo",
]
