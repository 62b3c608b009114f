"""vLLM's `/classify`, so that scripts written against a vLLM-served reward model work unchanged."""

from __future__ import annotations

import math
import time
import uuid

from fastapi import APIRouter, Request, Response

from app.api.deps import ReadyService, timing_headers, until_disconnected
from app.api.errors import ERROR_RESPONSES
from app.api.protocol import ClassifyData, ClassifyRequest, ClassifyResponse, ClassifyUsage
from reward_model.errors import InvalidInput
from reward_model.formatting import RewardInput

router = APIRouter(tags=["vllm"], responses=ERROR_RESPONSES)


@router.post("/classify", response_model=ClassifyResponse, summary="vLLM-compatible classification")
async def classify(
    body: ClassifyRequest, request: Request, response: Response, service: ReadyService
) -> ClassifyResponse:
    """Each `input` text is scored as it is (already formatted); `messages` is one conversation in the
    reward model's own format. `probs[0]` is the reward's sigmoid, or the raw reward with
    `use_activation: false`."""
    if (body.input is None) == (body.messages is None):
        raise InvalidInput("give exactly one of `input` (texts) and `messages` (one conversation)")
    if body.messages is not None:
        items = [RewardInput.from_messages([m.model_dump() for m in body.messages])]
    else:
        texts = [body.input] if isinstance(body.input, str) else list(body.input or [])
        service.check_count(len(texts))
        items = [RewardInput.raw(text) for text in texts]
    outcome = await until_disconnected(request, service.score(items))
    timing_headers(response, outcome)
    raw = body.use_activation is False
    tokens = sum(i.num_tokens for i in outcome.items)
    return ClassifyResponse(
        id=f"classify-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.model or service.model_id,
        data=[
            ClassifyData(index=i, label="LABEL_0", probs=[r if raw else _sigmoid(r)], num_classes=1)
            for i, r in enumerate(outcome.rewards)
        ],
        usage=ClassifyUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
