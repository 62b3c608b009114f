"""Domain errors, raised deep in the stack and mapped to HTTP exactly once, in `app.api.errors`."""

from __future__ import annotations


class RewardError(Exception):
    """Base class: every error the service reports to a client derives from this."""

    type = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RewardError):
    """The request is well-formed JSON but asks for something the service cannot score."""

    type = "invalid_request"


class InputTooLong(InvalidInput):
    """An item exceeds the token limit while truncation is switched off."""

    type = "input_too_long"


class PayloadTooLarge(RewardError):
    """The request body exceeds the configured byte limit."""

    type = "payload_too_large"


class Overloaded(RewardError):
    """The batch queue is full; the client should retry later."""

    type = "overloaded"


class NotReady(RewardError):
    """The model is still loading or warming up."""

    type = "not_ready"


class InferenceFailed(RewardError):
    """The model failed on an item even when it was run on its own."""

    type = "inference_failed"


class NonFiniteReward(InferenceFailed):
    """The model produced NaN or infinity for an item."""

    type = "non_finite_reward"


class CheckpointError(RewardError):
    """A checkpoint or ensemble directory breaks the contract; raised at startup."""

    type = "checkpoint_error"
