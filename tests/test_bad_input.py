"""Bad and odd input over real HTTP: each case gets its exact status and error body, and never a 5xx.

The table is the README's ("Reliability and security"); a row changed here is a row changed there.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from tests.helpers import Server, direct_pair_rewards

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
GOOD = {"prompt": "hi", "response": "hello"}


def error(kind: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": kind, "message": message}}


def invalid(message: str) -> tuple[int, dict]:
    return 422, error("invalid_request", message)


def score(*items: dict) -> bytes:
    return json.dumps({"items": list(items)}).encode()


NESTED = b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
BOMB = gzip.compress(b'{"items": [{"prompt": "' + b"a" * 100_000_000 + b'", "response": "b"}]}')

CASES = {
    "lone surrogate": (
        "/score",
        b'{"items": [{"prompt": "hi", "response": "\\ud800 x"}]}',
        JSON,
        invalid(
            "items.0.prompt_response.response: Value error, "
            "not valid Unicode: a lone surrogate at character 0"
        ),
    ),
    "100,000 items": (
        "/score",
        score(*[GOOD] * 100_000),
        JSON,
        invalid("100000 items in one request, over the limit of 1024"),
    ),
    "deeply nested JSON": (
        "/score",
        NESTED,
        JSON,
        (400, error("invalid_request", "There was an error parsing the body")),
    ),
    "a wrong type": (
        "/score",
        score({"prompt": "hi", "response": 5}),
        JSON,
        invalid("items.0.prompt_response.response: Input should be a valid string"),
    ),
    "a body that is not an object": (
        "/score",
        b"[1, 2]",
        JSON,
        invalid("body: Input should be a valid dictionary or object to extract fields from"),
    ),
    "NaN": (
        "/best-of-n",
        b'{"prompt": "a", "responses": ["x"], "top_k": NaN}',
        JSON,
        invalid("top_k: Input should be a valid integer"),
    ),
    "Infinity": (
        "/best-of-n",
        b'{"prompt": "a", "responses": ["x"], "top_k": -Infinity}',
        JSON,
        invalid("top_k: Input should be a valid integer"),
    ),
    "an unknown field": (
        "/score",
        json.dumps({"items": [GOOD], "temperature": 2}).encode(),
        JSON,
        invalid("temperature: Extra inputs are not permitted"),
    ),
    "an invalid chat role": (
        "/score",
        score({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        JSON,
        invalid(
            "items.0.messages.messages.0.role: Input should be 'system', 'developer', 'user', 'assistant', "
            "'tool' or 'ipython'"
        ),
    ),
    "no assistant turn": (
        "/score",
        score({"messages": [{"role": "user", "content": "x"}]}),
        JSON,
        invalid("the last message must have role 'assistant': it is the turn being scored"),
    ),
    "a last turn that is not the assistant's": (
        "/score",
        score({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}),
        JSON,
        invalid("the last message must have role 'assistant': it is the turn being scored"),
    ),
    "top_k 0": (
        "/best-of-n",
        json.dumps({"prompt": "a", "responses": ["x"], "top_k": 0}).encode(),
        JSON,
        invalid("top_k: Input should be greater than or equal to 1"),
    ),
    "top_k negative": (
        "/best-of-n",
        json.dumps({"prompt": "a", "responses": ["x"], "top_k": -3}).encode(),
        JSON,
        invalid("top_k: Input should be greater than or equal to 1"),
    ),
    "a form body": (
        "/score",
        b"items=x",
        {"content-type": "application/x-www-form-urlencoded"},
        (
            415,
            error(
                "unsupported_media_type",
                "the request body must be JSON (Content-Type: application/json), "
                "not 'application/x-www-form-urlencoded'",
            ),
        ),
    ),
    "no Content-Type": (
        "/score",
        score(GOOD),
        {},
        (
            415,
            error(
                "unsupported_media_type",
                "the request body must be JSON (Content-Type: application/json), and the request has none",
            ),
        ),
    ),
    "a gzip bomb": (
        "/score",
        BOMB,
        {**JSON, "content-encoding": "gzip"},
        (
            415,
            error(
                "unsupported_media_type",
                "compressed request bodies are not accepted (Content-Encoding: gzip)",
            ),
        ),
    ),
    "a body over the limit": (
        "/get_reward",
        b'{"query": ["' + b"x" * (17 * 1024 * 1024) + b'"]}',
        JSON,
        (413, error("payload_too_large", "request body is larger than the limit of 16777216 bytes")),
    ),
}


@pytest.mark.parametrize(("path", "body", "headers", "expected"), CASES.values(), ids=CASES.keys())
def test_bad_input_gets_its_exact_status_and_error(
    llama_server: Server, path: str, body: bytes, headers: dict, expected: tuple[int, dict]
):
    with llama_server.client() as client:
        response = client.post(path, content=body, headers=headers)
        assert (response.status_code, response.json()) == expected
        assert client.get("/health").status_code == 200


def test_odd_but_legal_text_is_scored_like_any_other(llama_server: Server, llama_dir: Path):
    pairs = [
        ("hi", ""),  # an empty response: a policy can generate one, and PPO needs its reward
        ("hi", "   \n"),
        ("hi\x00there", "a\x01b\x1b[31m\x7f"),  # control characters and NUL are text
        ("wie geht's? 🙂", "gut, danke — 你好"),
    ]
    with llama_server.client() as client:
        response = client.post("/score", json={"items": [{"prompt": p, "response": r} for p, r in pairs]})
    assert response.status_code == 200, response.text
    assert response.json()["rewards"] == pytest.approx(direct_pair_rewards(llama_dir, pairs), abs=1e-4)


def test_a_10_mb_item_under_the_body_limit_is_truncated_and_scored(llama_server: Server, llama_dir: Path):
    """Cut to its window before tokenizing: it costs what a long item does, and keeps the same tokens."""
    response_text = "the end of a very long answer. " * 330_000  # 10.2 MB
    with llama_server.client() as client:
        response = client.post("/score", json={"items": [{"prompt": "hi", "response": response_text}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["truncated"] == [True] and body["num_tokens"][0] > 128
    assert math.isfinite(body["rewards"][0])
    assert body["rewards"][0] == pytest.approx(
        direct_pair_rewards(llama_dir, [("hi", response_text)])[0], abs=1e-4
    )


def test_top_k_over_n_returns_the_whole_ranking(llama_server: Server):
    """As rerankers do (vLLM's `top_n`, Cohere's): asking for more than there are returns them all."""
    with llama_server.client() as client:
        response = client.post("/best-of-n", json={"prompt": "a", "responses": ["x", "y"], "top_k": 5})
    assert response.status_code == 200 and sorted(response.json()["ranking"]) == [0, 1]
