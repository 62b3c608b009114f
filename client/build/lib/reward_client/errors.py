"""What a call can raise. Every error the server sent carries its status, error type and message."""

from __future__ import annotations


class RewardClientError(Exception):
    """Base class of every error this package raises."""


class ServerError(RewardClientError):
    """The server answered with an error: `{"error": {"type", "message"}}` and an HTTP status."""

    def __init__(self, status: int, type: str, message: str, url: str, retry_after: float | None = None):
        super().__init__(f"{url}: {status} {type}: {message}")
        self.status, self.type, self.message, self.url = status, type, message, url
        self.retry_after = retry_after
        """Seconds the server asked to wait (`Retry-After`), if it did."""


class DeadlineExceeded(RewardClientError):
    """The call's total deadline passed before it could complete; `errors` holds what was seen."""

    def __init__(self, message: str, errors: dict[str, BaseException] | None = None) -> None:
        detail = "; ".join(f"{url}: {error}" for url, error in (errors or {}).items())
        super().__init__(f"{message} ({detail})" if detail else message)
        self.errors = dict(errors or {})


class AllServersFailed(RewardClientError):
    """Every server failed for this call; `errors` holds the last error seen from each."""

    def __init__(self, errors: dict[str, BaseException]) -> None:
        detail = "; ".join(f"{url}: {error}" for url, error in errors.items())
        super().__init__(f"every server failed: {detail}")
        self.errors = errors
