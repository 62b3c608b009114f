"""The one table from domain error to HTTP status, and the handlers that give every error one shape.

Every error body is `{"error": {"type": ..., "message": ...}}`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.protocol import ErrorResponse
from app.errors import NotReady, Overloaded, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from reward_model.errors import CheckpointError, InferenceFailed, InvalidInput, RewardError

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[RewardError], int] = {
    InvalidInput: 422,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    Unauthorized: 401,
    Overloaded: 429,
    NotReady: 503,
    InferenceFailed: 500,
    CheckpointError: 500,
}
RETRY_AFTER_SECONDS = {Overloaded: "1", NotReady: "5"}

_DESCRIPTIONS = {
    400: "The body could not be parsed (JSON nested too deeply).",
    401: "No API key, or a wrong one (when the server has keys).",
    413: "The body is over the size limit.",
    415: "The body is not JSON, or is compressed.",
    422: "The request is invalid: the message says where and why.",
    429: "The queue is full: retry after `Retry-After` seconds.",
    500: "The model failed on an item, alone (other items are answered).",
    503: "The model is loading, or the server is shutting down: retry after `Retry-After` seconds.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in _DESCRIPTIONS.items()
}
"""Every error status a scoring endpoint can return, documented in OpenAPI with the one error shape."""


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready; nobody reads the response."""


def error_body(error_type: str, message: str) -> dict[str, dict[str, str]]:
    """The single JSON error shape."""
    return {"error": {"type": error_type, "message": message}}


def status_for(error: RewardError) -> int:
    """Walk the error's class hierarchy to its entry in the table."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_response(error: RewardError) -> JSONResponse:
    """Render a domain error, with Retry-After where the client should come back."""
    headers = {}
    for cls, seconds in RETRY_AFTER_SECONDS.items():
        if isinstance(error, cls):
            headers["Retry-After"] = seconds
    return JSONResponse(error_body(error.type, error.message), status_code=status_for(error), headers=headers)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise through the one error shape."""

    async def on_reward_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RewardError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(error_body("invalid_request", _describe(exc)), status_code=422)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            error_body(kind, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    async def on_disconnect(request: Request, exc: Exception) -> JSONResponse:
        # 499 (nginx's "client closed request") keeps these apart from real errors in the metrics.
        return JSONResponse(
            error_body("client_disconnected", "client closed the connection"), status_code=499
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)

    app.add_exception_handler(RewardError, on_reward_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnected, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
