"""HTTP contract through the real app and lifespan: status codes and exact error bodies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from tests.helpers import wait_ready


@pytest.fixture(scope="module")
def client(llama_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model=str(llama_dir), max_items_per_request=4, max_body_bytes=4096, max_queue_items=6)
    with TestClient(create_app(settings)) as test_client:
        wait_ready(test_client)
        yield test_client


def error(kind: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": kind, "message": message}}


GOOD = {"prompt": "hi", "response": "hello"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"items": []}, "items: List should have at least 1 item after validation, not 0"),
        ({"items": [GOOD], "temperature": 2}, "temperature: Extra inputs are not permitted"),
        (
            {"items": [{"prompt": "hi", "response": 5}]},
            "items.0.prompt_response.response: Input should be a valid string",
        ),
        (
            {"items": [{"prompt": "", "response": "an empty prompt is not a prompt"}]},
            "items.0.prompt_response.prompt.constrained-str: String should have at least 1 character; "
            "items.0.prompt_response.prompt.list[Message]: Input should be a valid list",
        ),
        ({"items": [{"prompt": "hi"}]}, "items.0.prompt_response.response: Field required"),
        (
            {"items": [{"messages": []}]},
            "items.0.messages.messages: List should have at least 1 item after validation, not 0",
        ),
        ({"items": [GOOD] * 5}, "5 items in one request, over the limit of 4"),
        (
            {"items": [{"messages": [{"role": "user", "content": "hi"}]}]},
            "the last message must have role 'assistant': it is the turn being scored",
        ),
        (
            {"items": [GOOD], "aggregation": "max"},
            "aggregation: Input should be 'mean', 'median', 'min', 'mean_minus_std' or 'weighted'",
        ),
    ],
)
def test_invalid_requests_get_422_with_one_error_shape(client: TestClient, body: dict, message: str):
    response = client.post("/score", json=body)
    assert response.status_code == 422
    assert response.json() == error("invalid_request", message)


def test_malformed_json_is_422(client: TestClient):
    response = client.post("/score", content=b'{"items": [', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"
    assert "JSON decode error" in response.json()["error"]["message"]


def test_oversized_body_is_413(client: TestClient):
    response = client.post("/score", json={"items": [{"prompt": "x" * 5000, "response": "y"}]})
    assert response.status_code == 413
    assert response.json() == error(
        "payload_too_large", "request body is larger than the limit of 4096 bytes"
    )


def test_chunked_oversized_body_is_413(client: TestClient):
    chunks = (b'{"items": [{"prompt": "' + b"x" * 1000, *[b"x" * 1000] * 5, b'", "response": "y"}]}')
    response = client.post("/score", content=iter(chunks), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/score", lambda n: {"items": [GOOD] * n}),
        ("/best-of-n", lambda n: {"prompt": "hi", "responses": ["a", "b", "c", "d", "e"][:n]}),
        ("/get_reward", lambda n: {"query": ["a b c"] * n}),
    ],
)
def test_the_item_limit_holds_on_every_endpoint(client: TestClient, path: str, body):
    assert client.post(path, json=body(4)).status_code == 200
    response = client.post(path, json=body(5))
    assert response.status_code == 422
    assert response.json() == error("invalid_request", "5 items in one request, over the limit of 4")


def test_unknown_path_and_method_use_the_error_shape(client: TestClient):
    assert client.get("/nope").json() == error("not_found", "Not Found")
    response = client.get("/score")
    assert response.status_code == 405
    assert response.json() == error("method_not_allowed", "Method Not Allowed")


def test_scoring_before_the_model_is_loaded_is_503(llama_dir: Path):
    app = create_app(Settings(model=str(llama_dir)))
    plain = TestClient(app)  # no `with`: the lifespan never runs, so the model never loads
    assert plain.get("/health").json() == {"status": "ok"}
    ready = plain.get("/ready")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
    response = plain.post("/score", json={"items": [GOOD]})
    assert response.status_code == 503
    assert response.json() == error("not_ready", "the model is still loading; poll /ready")


def test_overload_is_429(llama_dir: Path):
    with TestClient(create_app(Settings(model=str(llama_dir), max_queue_items=2))) as small:
        wait_ready(small)
        response = small.post("/score", json={"items": [GOOD] * 3})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == error("overloaded", "queue full: 0 items waiting, limit 2; retry later")


def test_over_long_input_without_truncation_is_422(llama_dir: Path):
    with TestClient(
        create_app(Settings(model=str(llama_dir), truncate=False, max_input_tokens=16))
    ) as strict:
        wait_ready(strict)
        response = strict.post("/score", json={"items": [GOOD, {"prompt": "hi " * 40, "response": "ok"}]})
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["type"] == "input_too_long"
    assert (
        body["message"].startswith("an item has ")
        and "over the limit of 16, and truncation is off" in body["message"]
    )


def test_a_load_failure_is_reported_by_ready(tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    failures: list[str] = []
    with TestClient(create_app(Settings(model=str(broken)), on_fatal=failures.append)) as c:
        deadline = time.monotonic() + 30
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready = c.get("/ready")
    assert failures == [f"{broken}: no config.json, so this is not a HuggingFace model directory"]
    assert ready.status_code == 503 and "loading failed" in ready.json()["error"]["message"]


def test_openapi_documents_every_endpoint_with_examples(client: TestClient):
    schema = client.get("/openapi.json").json()
    for path in ("/score", "/compare", "/best-of-n", "/get_reward", "/health", "/ready", "/info", "/metrics"):
        assert path in schema["paths"], path
    for name in ("ScoreRequest", "CompareRequest", "BestOfNRequest", "GetRewardRequest"):
        assert schema["components"]["schemas"][name]["examples"], name


@pytest.mark.parametrize("origins", [None, "https://app.example"])
def test_cors_is_off_unless_origins_are_configured(llama_dir: Path, origins: str | None):
    app = create_app(Settings(model=str(llama_dir), cors_origins=origins, api_keys="k"))
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(app) as browser:
        allowed = browser.options("/score", headers=preflight)
        other = browser.options("/score", headers={**preflight, "Origin": "https://evil.example"})
    if origins is None:
        assert "access-control-allow-origin" not in allowed.headers
    else:
        assert allowed.status_code == 200  # a preflight carries no API key and still passes
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
