"""Scoring endpoints: /score, /compare and /best-of-n."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import ReadyService, member_rewards, timing_headers, until_disconnected
from app.api.errors import ERROR_RESPONSES
from app.api.protocol import (
    BestOfNRequest,
    BestOfNResponse,
    CompareRequest,
    CompareResponse,
    Message,
    MessagesItem,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
)
from reward_model.formatting import RewardInput

router = APIRouter(tags=["scoring"], responses=ERROR_RESPONSES)


def _to_input(item: ScoreItem) -> RewardInput:
    if isinstance(item, MessagesItem):
        return RewardInput.from_messages([m.model_dump() for m in item.messages])
    prompt = item.prompt if isinstance(item.prompt, str) else [m.model_dump() for m in item.prompt]
    return RewardInput.from_prompt_response(prompt, item.response)


def _prompt(value: str | list[Message]) -> str | list[dict[str, str]]:
    return value if isinstance(value, str) else [m.model_dump() for m in value]


@router.post(
    "/score", response_model=ScoreResponse, summary="Score (prompt, response) pairs or conversations"
)
async def score_items(
    body: ScoreRequest, request: Request, response: Response, service: ReadyService
) -> ScoreResponse:
    """Rewards in input order. An item's reward never depends on what else is in the batch."""
    service.check_count(len(body.items))
    items = [_to_input(item) for item in body.items]
    outcome = await until_disconnected(request, service.score(items, **body.scoring()))
    timing_headers(response, outcome)
    return ScoreResponse(
        model=service.model_id,
        rewards=outcome.rewards,
        stds=[i.std for i in outcome.items],
        truncated=[i.truncated for i in outcome.items],
        num_tokens=[i.num_tokens for i in outcome.items],
        normalized=outcome.normalized,
        aggregation=outcome.aggregation,
        member_rewards=member_rewards(service, outcome, body.return_member_rewards),
    )


@router.post("/compare", response_model=CompareResponse, summary="Which of two responses is better")
async def compare_responses(
    body: CompareRequest, request: Request, response: Response, service: ReadyService
) -> CompareResponse:
    """prob_a_better = sigmoid((reward_a - reward_b) / T); swapping A and B gives 1 - p."""
    result = await until_disconnected(
        request,
        service.compare(
            _prompt(body.prompt),
            body.response_a,
            body.response_b,
            **body.scoring(),
        ),
    )
    timing_headers(response, result.outcome)
    return CompareResponse(
        model=service.model_id,
        reward_a=result.a.reward,
        reward_b=result.b.reward,
        std_a=result.a.std,
        std_b=result.b.std,
        prob_a_better=result.prob_a_better,
        preferred=result.preferred,  # type: ignore[arg-type]
        members_agreeing=result.members_agreeing,
        num_members=len(service.members),
        temperature=result.temperature,
        member_rewards=member_rewards(service, result.outcome, body.return_member_rewards),
    )


@router.post("/best-of-n", response_model=BestOfNResponse, summary="Rank N candidates and return the best")
async def rank_best_of_n(
    body: BestOfNRequest, request: Request, response: Response, service: ReadyService
) -> BestOfNResponse:
    """Candidates ranked by reward, best first; ties keep input order."""
    service.check_count(len(body.responses))
    result = await until_disconnected(
        request,
        service.best_of_n(_prompt(body.prompt), body.responses, **body.scoring()),
    )
    timing_headers(response, result.outcome)
    best = result.ranking[0]
    return BestOfNResponse(
        model=service.model_id,
        best_index=best,
        best_response=body.responses[best],
        rewards=result.outcome.rewards,
        stds=[i.std for i in result.outcome.items],
        ranking=result.ranking[: body.top_k] if body.top_k else result.ranking,
        member_rewards=member_rewards(service, result.outcome, body.return_member_rewards),
    )
