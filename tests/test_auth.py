"""API keys on a real server: Bearer tokens from the environment and from a file, 401 with no detail,
open or protected probes, keys never logged nor shown, and a bad key file refused at startup."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from reward_client import RewardClient, ServerError

from tests.helpers import start_server, startup_error, stop_server

ITEM = {"prompt": "how do I bake bread?", "response": "knead it."}
ENV_KEY, FILE_KEY = "env-key-3f9a1c", "file-key-77b2e0"
UNAUTHORIZED = {
    "error": {"type": "unauthorized", "message": "a valid API key is required: Authorization: Bearer <key>"}
}


def score(url: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(f"{url}/score", json={"items": [ITEM]}, headers=headers, timeout=60)


def ready(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(f"{url}/ready", headers=headers, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_keys_from_the_environment_and_a_file(llama_dir: Path, tmp_path: Path):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# operators\n{FILE_KEY}\n\n")
    server = start_server(
        llama_dir, tmp_path, "--api-key-file", str(key_file), env={"REWARD_API_KEYS": ENV_KEY}
    )
    try:
        for key in (ENV_KEY, FILE_KEY):
            assert score(server.url, key).status_code == 200
        for key in (None, "wrong", ENV_KEY + "x", ENV_KEY[:-1], f"{ENV_KEY},{FILE_KEY}"):
            refused = score(server.url, key)
            assert refused.status_code == 401, key
            assert refused.json() == UNAUTHORIZED
            assert refused.headers["www-authenticate"] == "Bearer"
        basic = httpx.post(f"{server.url}/score", json={"items": [ITEM]}, auth=("user", ENV_KEY))
        assert basic.status_code == 401  # only Bearer tokens count
        for path in ("/health", "/ready", "/metrics", "/openapi.json"):  # probes and docs stay open
            assert httpx.get(f"{server.url}{path}").status_code == 200, path
        assert httpx.get(f"{server.url}/info").status_code == 401
        info = httpx.get(f"{server.url}/info", headers={"Authorization": f"Bearer {FILE_KEY}"}).text
        with RewardClient(server.url, api_key=ENV_KEY) as client:
            assert len(client.score([ITEM]).rewards) == 1
        with RewardClient(server.url) as client, pytest.raises(ServerError) as caught:
            client.score([ITEM])
        assert caught.value.status == 401 and caught.value.type == "unauthorized"
    finally:
        stop_server(server)
    for key in (ENV_KEY, FILE_KEY):
        assert key not in info and key not in server.log()


def test_probes_can_be_put_behind_the_key(llama_dir: Path, tmp_path: Path):
    server = start_server(
        llama_dir, tmp_path, "--auth-probes", wait_ready=False, env={"REWARD_API_KEYS": ENV_KEY}
    )
    headers = {"Authorization": f"Bearer {ENV_KEY}"}
    try:
        deadline = time.monotonic() + 120
        while not ready(server.url, headers):
            assert time.monotonic() < deadline and server.process.poll() is None, server.log()
            time.sleep(0.1)
        for path in ("/health", "/ready", "/metrics"):
            assert httpx.get(f"{server.url}{path}").json() == UNAUTHORIZED, path
            assert httpx.get(f"{server.url}{path}", headers=headers).status_code == 200, path
    finally:
        stop_server(server)


def test_an_unusable_key_file_stops_the_start_in_one_line(llama_dir: Path, tmp_path: Path):
    missing = tmp_path / "no-such-file"
    line = startup_error(llama_dir, "--api-key-file", str(missing))
    assert line == f"reward-serve: error: cannot read --api-key-file {missing}: No such file or directory"
    empty = tmp_path / "empty"
    empty.write_text("# no keys yet\n\n")
    line = startup_error(llama_dir, "--api-key-file", str(empty))
    assert line == f"reward-serve: error: --api-key-file {empty} holds no key"
