"""Request and response schemas of every endpoint (vLLM's `/classify`: in `vllm_compat`), with the
examples shown in the OpenAPI docs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictStr,
    Tag,
)

from reward_model.checkpoint import Aggregation
from reward_model.ensemble import MAX_LENGTH_PENALTY


def _encodable(value: str) -> str:
    """JSON can spell a lone UTF-16 surrogate (`"\\ud800"`); no tokenizer can encode one."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid Unicode: a lone surrogate at character {exc.start}") from None
    return value


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 2.0; strict validation would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
"""A whole number, written `2` or `2.0`, never `"2"` or `true`."""


def _encodable_prompt(value: str | list[Any]) -> str | list[Any]:
    return _encodable(value) if isinstance(value, str) else value


Content = Annotated[StrictStr, AfterValidator(_encodable)]
"""Any text, empty included: a policy can generate an empty response, and it gets a reward like any
other. Control characters and NUL are text; a lone surrogate is not."""
Role = Literal["system", "developer", "user", "assistant", "tool", "ipython"]
"""The chat roles of OpenAI's API and of the chat templates that take more (Llama 3's `ipython`)."""


class ErrorDetail(BaseModel):
    """What went wrong: a stable `type` to branch on, and a message for people."""

    type: str
    message: str


class ErrorResponse(BaseModel):
    """The one shape of every error the service returns, whatever its status."""

    error: ErrorDetail


class Strict(BaseModel):
    """Unknown fields are an error: a typo must not silently change what is scored. Types are strict:
    `0` is not `false` and `"1"` is not `1`, as the schema says."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Message(Strict):
    """One chat turn."""

    role: Role
    content: Content


Prompt = Annotated[
    Annotated[StrictStr, Field(min_length=1)] | Annotated[list[Message], Field(min_length=1)],
    Field(union_mode="left_to_right"),
    AfterValidator(_encodable_prompt),
]
"""A non-empty string (one user turn) or chat messages."""


class PromptResponseItem(Strict):
    """A prompt (a string, or chat messages) and the response to score."""

    prompt: Prompt
    response: Content


class MessagesItem(Strict):
    """A conversation; its last message is the assistant turn being scored."""

    messages: Annotated[
        list[Message], Field(min_length=1, description="The last message must be the assistant's.")
    ]


def _item_kind(value: Any) -> str:
    return "messages" if isinstance(value, dict) and "messages" in value else "prompt_response"


ScoreItem = Annotated[
    Annotated[PromptResponseItem, Tag("prompt_response")] | Annotated[MessagesItem, Tag("messages")],
    Discriminator(_item_kind),
]


class ScoringOptions(Strict):
    """Options every scoring endpoint accepts."""

    normalize: bool | None = Field(
        default=None, description="Return (r - mean) / std from reward.json (default: the server's setting)."
    )
    aggregation: Aggregation | None = Field(
        default=None, description="Ensemble aggregation for this request."
    )
    return_member_rewards: bool = Field(
        default=False, description="Also return each ensemble member's reward."
    )
    length_penalty: float | None = Field(
        default=None,
        ge=0.0,
        le=MAX_LENGTH_PENALTY,
        allow_inf_nan=False,
        description="α in r - α x response tokens, in units of the returned reward (default: the server's).",
    )
    length_residual: bool | None = Field(
        default=None,
        description="Subtract the reward's length trend fitted at training (default: the server's setting).",
    )

    def scoring(self) -> dict[str, Any]:
        """The options the service's scoring methods take."""
        return {
            "normalize": self.normalize,
            "aggregation": self.aggregation,
            "length_penalty": self.length_penalty,
            "length_residual": self.length_residual,
        }


class ScoreRequest(ScoringOptions):
    """Score a list of items."""

    items: list[ScoreItem] = Field(min_length=1)

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"prompt": "What is the capital of France?", "response": "Paris."},
                        {
                            "messages": [
                                {"role": "user", "content": "Say hi"},
                                {"role": "assistant", "content": "Hi!"},
                            ]
                        },
                    ]
                }
            ]
        },
    )


class ScoreResponse(BaseModel):
    """Rewards in input order, with per-item uncertainty and truncation accounting."""

    model: str
    rewards: list[float]
    stds: list[float] = Field(description="Ensemble disagreement per item (0 for a single model).")
    truncated: list[bool]
    num_tokens: list[int] = Field(description="Tokens per item before truncation.")
    normalized: bool
    aggregation: str
    member_rewards: dict[str, list[float]] | None = None


class CompareRequest(ScoringOptions):
    """Compare two responses to one prompt."""

    prompt: Prompt
    response_a: Content
    response_b: Content

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"prompt": "How do I boil an egg?", "response_a": "Boil it 8 minutes.", "response_b": "No."}
            ]
        },
    )


class CompareResponse(BaseModel):
    """The preferred response and the calibrated probability that A is better."""

    model: str
    reward_a: float
    reward_b: float
    std_a: float
    std_b: float
    prob_a_better: float
    preferred: Literal["a", "b", "tie"]
    members_agreeing: int = Field(description="Ensemble members whose own rewards prefer the same response.")
    num_members: int
    temperature: float
    member_rewards: dict[str, list[float]] | None = None


class BestOfNRequest(ScoringOptions):
    """Rank N candidate responses to one prompt."""

    prompt: Prompt
    responses: list[Content] = Field(min_length=1)
    top_k: Annotated[int, Field(ge=1), BeforeValidator(_integral)] | None = Field(
        default=None, description="Return only the best k indices in `ranking`."
    )

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"prompt": "Name a prime.", "responses": ["4", "7", "9"], "top_k": 1}]
        },
    )


class BestOfNResponse(BaseModel):
    """The best candidate and the ranking, best first."""

    model: str
    best_index: int
    best_response: str
    rewards: list[float]
    stds: list[float]
    ranking: list[int]
    member_rewards: dict[str, list[float]] | None = None


class GetRewardRequest(Strict):
    """OpenRLHF remote reward model protocol: fully formatted query strings, scored as they are. An empty
    `query` list gets empty lists back (OpenRLHF sends one to each extra server of a multi-URL split)."""

    query: list[Content]
    prompts: list[Content] | None = Field(
        default=None, description="The prompt each query starts with: one per query, in the same order."
    )
    labels: list[Any] | None = None

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"query": ["\n\nHuman: Hi\n\nAssistant: Hello! How can I help?"]}]},
    )


class GetRewardResponse(BaseModel):
    """OpenRLHF's response shape."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


class MemberInfo(BaseModel):
    """One ensemble member as `/info` describes it."""

    name: str
    path: str
    architecture: str
    engine: str = Field(description="transformers or vllm.")
    compiled: bool = Field(description="Whether the transformers engine runs torch.compile'd.")
    prefix_sharing: bool = Field(
        description="Whether a prompt shared by several items of a batch runs once for all of them."
    )
    prefix_sharing_note: str = Field(description="Why it does or does not: the model, the setting.")
    device: str
    dtype: str
    parameters: int
    max_length: int = Field(description="Effective token limit per item for this member.")
    max_batch_tokens: int = Field(description="Effective token budget of one forward pass.")
    max_padding_ratio: float = Field(description="Effective padding bound of one forward pass.")
    input_format: str
    normalization: dict[str, float]
    calibration: dict[str, float]
    length_fit: dict[str, float] | None = Field(
        description="reward ≈ intercept + slope x response tokens on the training responses (reward.json)."
    )
    weight: float
    weights_sha256: str
    provenance: dict[str, Any]


class LengthControlInfo(BaseModel):
    """The server's length-control defaults; each request can override them."""

    penalty: float = Field(description="α in r - α x response tokens; 0: off.")
    residual: bool = Field(description="Whether the fitted length trend is subtracted by default.")
    residual_available: bool = Field(description="Whether every member has a length fit to subtract.")


class Limits(BaseModel):
    """The limits in force, as the batchers apply them (the tightest member's, for an ensemble)."""

    max_input_tokens: int | None = Field(
        description="Tokens per item; longer items are truncated or refused."
    )
    max_batch_size: int
    max_batch_tokens: int | None = Field(description="Token budget of one forward pass (items x longest).")
    max_padding_ratio: float | None = Field(description="Largest share of padding in one forward pass.")
    max_wait_ms: float
    max_queue_items: int = Field(description="Items waiting per model copy; past it: 429.")
    max_items_per_request: int = Field(description="Items in one request; past it: 422.")
    max_body_bytes: int = Field(description="Request body size; past it: 413.")
    truncate: bool


class InfoResponse(BaseModel):
    """What is being served and how."""

    model: str
    ready: bool
    num_members: int
    aggregation: str | None = Field(description="Default aggregation; null until the model is loaded.")
    uncertainty_coef: float | None
    members: list[MemberInfo]
    length_control: LengthControlInfo
    limits: Limits
