"""`reward-healthcheck`: the container's health check, exit 0 once this container's server is ready.

It asks `/ready`, not `/health`, so that compose's `depends_on: condition: service_healthy` and an
orchestrator wait for the model, and a draining server (503 from SIGTERM on) turns unhealthy at once.
It reads the same settings as `reward-serve` (`REWARD_PORT`, and the API key when `--auth-probes` puts
the probes behind it), so it needs no arguments and no tool the image lacks (curl, wget).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.settings import Settings

TIMEOUT_SECONDS = 3.0


def ready_url(settings: Settings) -> str:
    """The server's readiness probe as seen from inside its own container."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "127.0.0.1", "localhost") else settings.host
    if ":" in host:  # an IPv6 address, or "::" (bound everywhere): ask loopback
        host = "[::1]" if host == "::" else f"[{host}]"
    return f"http://{host}:{settings.port}/ready"


def check(settings: Settings) -> str | None:
    """None when the server says it is ready; else why not, in one line."""
    request = urllib.request.Request(ready_url(settings))
    if settings.auth_probes:
        from app.api.auth import api_keys

        keys = api_keys(settings)
        if keys:
            request.add_header("Authorization", f"Bearer {keys[0]}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return None if response.status == 200 else f"/ready answered {response.status}"
    except urllib.error.HTTPError as exc:  # 503 while loading or draining
        return f"/ready answered {exc.code}"
    except OSError as exc:  # refused, timed out, unresolvable (URLError is an OSError)
        return f"no answer from {request.full_url}: {getattr(exc, 'reason', exc)}"


def main() -> None:
    """Exit 0 if ready, 1 with one line on stderr if not (Docker's HEALTHCHECK contract)."""
    try:
        problem = check(Settings())
    except Exception as exc:  # a bad setting or key file is unhealthy, never a traceback
        problem = f"settings: {exc}".splitlines()[0]
    if problem is not None:
        print(f"reward-healthcheck: {problem}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
