"""OpenRLHF's remote reward-model protocol (`--remote_rm_url http://host:port/get_reward`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import ReadyService, timing_headers, until_disconnected
from app.api.errors import ERROR_RESPONSES
from app.api.protocol import GetRewardRequest, GetRewardResponse
from reward_model.errors import InvalidInput
from reward_model.formatting import RewardInput

router = APIRouter(tags=["openrlhf"], responses=ERROR_RESPONSES)


@router.post("/get_reward", response_model=GetRewardResponse, summary="OpenRLHF remote reward protocol")
async def get_reward(
    body: GetRewardRequest, request: Request, response: Response, service: ReadyService
) -> GetRewardResponse:
    """Each query is already fully formatted and is scored as it is; `labels` are ignored.

    `prompts`, when given, name the prompt each query starts with: decoder models then run a prompt
    shared by several queries once, across requests too. Without them, queries of one request share
    their longest common token prefix."""
    if not body.query:  # OpenRLHF's multi-URL split sends empty shards to the extra servers
        return GetRewardResponse(rewards=[], scores=[], extra_logs={})
    service.check_count(len(body.query))
    if body.prompts is not None and len(body.prompts) != len(body.query):
        raise InvalidInput(f"{len(body.prompts)} prompts for {len(body.query)} queries: give one per query")
    prompts: list[str | None] = list(body.prompts) if body.prompts else [None] * len(body.query)
    items = [RewardInput.raw(q, p) for q, p in zip(body.query, prompts, strict=True)]
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
