"""Domain errors of scoring, raised deep in the stack and mapped to HTTP exactly once, by the service.

The service adds its own (overload, readiness, body size) in `app/errors.py`; all derive from
`RewardError`, whose `type` is the error type clients see.
"""

from __future__ import annotations


class RewardError(Exception):
    """Base class: every error the service reports to a client derives from this."""

    type = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RewardError):
    """The request is well-formed JSON but asks for something that cannot be scored."""

    type = "invalid_request"


class InputTooLong(InvalidInput):
    """An item exceeds the token limit while truncation is switched off."""

    type = "input_too_long"


class InferenceFailed(RewardError):
    """The model failed on an item even when it was run on its own."""

    type = "inference_failed"


class NonFiniteReward(InferenceFailed):
    """The model produced NaN or infinity for an item."""

    type = "non_finite_reward"


class EngineUnavailable(RewardError):
    """The chosen engine cannot run here (not installed, or not for this machine); raised at startup."""

    type = "engine_unavailable"


class CheckpointError(RewardError):
    """A checkpoint or ensemble directory breaks the contract; raised when it is opened."""

    type = "checkpoint_error"
