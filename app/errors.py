"""Errors only the service raises; the scoring ones live in `reward_model.errors`.

Both are mapped to HTTP exactly once, in `app.api.errors`.
"""

from __future__ import annotations

from reward_model.errors import RewardError


class PayloadTooLarge(RewardError):
    """The request body exceeds the configured byte limit."""

    type = "payload_too_large"


class Overloaded(RewardError):
    """The batch queue is full; the client should retry later."""

    type = "overloaded"


class Unauthorized(RewardError):
    """No API key, or not one of the server's; the message never says which."""

    type = "unauthorized"


class ConfigurationError(RewardError):
    """A setting the server cannot start with (an unreadable or empty API key file)."""

    type = "configuration_error"


class NotReady(RewardError):
    """The model is still loading or warming up, or the server is shutting down."""

    type = "not_ready"


class UnsupportedMediaType(RewardError):
    """A request body that is not JSON, or is compressed."""

    type = "unsupported_media_type"
