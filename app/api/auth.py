"""API keys: `Authorization: Bearer <key>` checked before a request's body is read.

Keys come from `--api-key-file` (one a line) and `REWARD_API_KEYS` (comma-separated). A token is
compared with every key, each as a SHA-256 digest with `hmac.compare_digest`, so the time taken says
nothing about how much of a key matched, nor which key. A missing or wrong key gets 401 with the one
error shape and no detail. The probes (`/health`, `/ready`, `/metrics`) stay open unless
`--auth-probes`; the API docs stay open. Keys are never logged nor shown.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import ConfigurationError, Unauthorized
from app.settings import Settings

PROBES = frozenset({"/health", "/ready", "/metrics"})
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def api_keys(settings: Settings) -> list[str]:
    """The keys the settings give; raises ConfigurationError for a key file that yields none."""
    keys = []
    if settings.api_keys is not None:
        keys += [k.strip() for k in settings.api_keys.get_secret_value().split(",") if k.strip()]
    if settings.api_key_file is not None:
        try:
            lines = settings.api_key_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigurationError(f"cannot read --api-key-file {settings.api_key_file}: {reason}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"--api-key-file {settings.api_key_file} is not UTF-8 text") from exc
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise ConfigurationError(f"--api-key-file {settings.api_key_file} holds no key")
        keys += from_file
    return keys


class KeyRing:
    """Checks a presented token against every key in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def allows(self, token: str) -> bool:
        presented = hashlib.sha256(token.encode()).digest()
        matched = False
        for digest in self._digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(presented, digest)
        return matched


class RequireApiKey:
    """ASGI middleware: 401 unless the request carries one of the keys (see the module docstring)."""

    def __init__(self, app: ASGIApp, keys: KeyRing, protect_probes: bool) -> None:
        self.app, self.keys = app, keys
        self.open = DOCS if protect_probes else DOCS | PROBES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token and self.keys.allows(token.strip()):
            await self.app(scope, receive, send)
            return
        response = error_response(Unauthorized("a valid API key is required: Authorization: Bearer <key>"))
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
