"""OpenRLHF's remote reward-model protocol (`--remote_rm_url http://host:port/get_reward`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import ReadyService, timing_headers, until_disconnected
from app.api.protocol import GetRewardRequest, GetRewardResponse
from reward_model.formatting import RewardInput

router = APIRouter(tags=["openrlhf"])


@router.post("/get_reward", response_model=GetRewardResponse, summary="OpenRLHF remote reward protocol")
async def get_reward(
    body: GetRewardRequest, request: Request, response: Response, service: ReadyService
) -> GetRewardResponse:
    """Each query is already fully formatted and is scored as it is; `prompts` and `labels` are ignored."""
    service.check_count(len(body.query))
    items = [RewardInput.raw(q) for q in body.query]
    outcome = await until_disconnected(request, service.score(items))
    timing_headers(response, outcome)
    rewards = outcome.rewards
    return GetRewardResponse(
        rewards=rewards,
        scores=rewards,
        extra_logs={
            "reward_std": [i.std for i in outcome.items],
            "truncated": [float(i.truncated) for i in outcome.items],
            "num_tokens": [float(i.num_tokens) for i in outcome.items],
        },
    )
