"""vLLM's `/classify`, so that scripts written against a vLLM-served reward model work unchanged."""

from __future__ import annotations

import math
import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ReadyService, timing_headers, until_disconnected
from app.api.errors import ERROR_RESPONSES
from app.api.protocol import Content, Integer, Message, Strict
from reward_model.errors import InvalidInput
from reward_model.formatting import RewardInput

router = APIRouter(tags=["vllm"], responses=ERROR_RESPONSES)


class ClassifyRequest(Strict):
    """vLLM's `/classify`: fully formatted texts (`input`), or one conversation (`messages`).

    `model` is accepted whatever it names, so that a script written against a vLLM server runs
    unchanged; vLLM's other request options are accepted and have no effect here."""

    model: Content | None = None
    input: Content | Annotated[list[Content], Field(min_length=1)] | None = None
    messages: Annotated[list[Message], Field(min_length=1)] | None = None
    use_activation: bool | None = Field(
        default=None, description="false: the raw reward; else its sigmoid (vLLM's one-label default)."
    )
    user: Content | None = None
    priority: Integer | None = None
    truncate_prompt_tokens: Integer | None = None
    add_special_tokens: bool | None = None

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"input": ["\n\nHuman: Hi\n\nAssistant: Hello!"], "use_activation": False}],
            # exactly one of `input` and `messages` is given (not null)
            "oneOf": [
                {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
                for field in ("input", "messages")
            ],
        },
    )


class ClassifyData(BaseModel):
    """One classified input, in vLLM's shape."""

    index: int
    label: str
    probs: list[float]
    num_classes: int


class ClassifyUsage(BaseModel):
    """Token counts, in vLLM's shape."""

    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ClassifyResponse(BaseModel):
    """vLLM's `/classify` response."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ClassifyData]
    usage: ClassifyUsage


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
