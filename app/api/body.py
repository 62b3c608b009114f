"""RequestBody: the ASGI middleware that vets a request body before any of it is parsed.

In order, each refused with the one error shape and before the next step runs:
- a compressed body (`Content-Encoding` other than identity): 415. It is never decompressed, so a
  gzip bomb costs nothing;
- a `Content-Type` that is not JSON, or a body without one (FastAPI would not read it as JSON): 415;
- a body over the byte limit, by its `Content-Length` or by counting the bytes as they arrive (a
  chunked upload has no length): 413. Never more than the limit is held in memory.
The body is then replayed to the app.
"""

from __future__ import annotations

from email.message import Message as MimeHeader

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import PayloadTooLarge, UnsupportedMediaType


def is_json(content_type: str) -> bool:
    """`application/json` or `application/*+json`, parameters allowed: FastAPI's own rule."""
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def refusal(headers: dict[bytes, bytes], max_bytes: int) -> UnsupportedMediaType | PayloadTooLarge | None:
    """Why these request headers are refused before the body is read, or None."""
    encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding not in ("", "identity"):
        return UnsupportedMediaType(
            f"compressed request bodies are not accepted (Content-Encoding: {encoding})"
        )
    content_type = headers.get(b"content-type", b"").decode("latin-1").strip()
    length = headers.get(b"content-length")
    has_body = b"transfer-encoding" in headers or (length is not None and length not in (b"", b"0"))
    if (content_type or has_body) and not is_json(content_type):
        given = f"not {content_type!r}" if content_type else "and the request has none"
        return UnsupportedMediaType(
            f"the request body must be JSON (Content-Type: application/json), {given}"
        )
    if length is not None and length.isdigit() and int(length) > max_bytes:
        return too_large(max_bytes)
    return None


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes")


class RequestBody:
    """Vet the body of every POST before the app parses it (no route takes another method with a body)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        refused = refusal(dict(scope.get("headers", [])), self.max_bytes)
        if refused is not None:
            await error_response(refused)(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await error_response(too_large(self.max_bytes))(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
