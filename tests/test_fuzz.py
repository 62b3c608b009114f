"""Property-based fuzzing of every endpoint with schemathesis, against the service's own OpenAPI schema.

Over real HTTP to a real server: no response is a 5xx, every error has the documented shape, every
status and body is the one the schema documents, data the schema allows is accepted, and data it
forbids is refused. `REWARD_FUZZ_EXAMPLES` sets the examples per endpoint (CI: a bounded few; a
longer run: `REWARD_FUZZ_EXAMPLES=1000 pytest tests/test_fuzz.py`). Hypothesis runs derandomized, so
a run is the same every time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import get_args

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.api.protocol import Role
from app.server import create_app
from app.settings import Settings
from tests.helpers import Server, start_server, stop_server
from tests.tiny_models import save_llama

# serial: schemathesis reports each operation as a sub-result of one test, and under pytest-xdist a
# failing operation's report is dropped (checked: a deliberately failing one passed there)
pytestmark = [pytest.mark.slow, pytest.mark.serial]

EXAMPLES = int(os.environ.get("REWARD_FUZZ_EXAMPLES", "20"))
OPENAPI = create_app(Settings(model="unused")).openapi()  # builds the app only: nothing loads
schema = schemathesis.openapi.from_dict(OPENAPI)


def keep_the_rules_json_schema_cannot_state(body: object) -> None:
    """Two rules span fields, which JSON Schema cannot express, so the schema states them in words:
    a conversation's last message is the assistant turn being scored, and OpenRLHF's `prompts`, when
    given, has one prompt per query. Generated valid bodies are made to keep them; a field that was
    generated invalid stays invalid."""
    query, prompts = (body.get("query"), body.get("prompts")) if isinstance(body, dict) else (None, None)
    if isinstance(query, list) and isinstance(prompts, list) and all(isinstance(p, str) for p in prompts):
        body["prompts"] = (prompts + [""] * len(query))[: len(query)]  # type: ignore[index]
    conversations = [body] if isinstance(body, dict) else []
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        conversations += [item for item in body["items"] if isinstance(item, dict)]
    for holder in conversations:
        messages = holder.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if isinstance(last, dict) and last.get("role") in get_args(Role):  # an invalid one stays invalid
            last["role"] = "assistant"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The tiny Llama with a length fit in its reward.json, so that every option the schema allows is
    one this model can honour (`length_residual` on a model without a fit: `test_length_control`)."""
    model = save_llama(
        tmp_path_factory.mktemp("fitted"), length={"slope": 0.1, "mean_tokens": 8, "correlation": 0.2}
    )
    running = start_server(model, tmp_path_factory.mktemp("srv"))
    yield running
    stop_server(running)


def test_the_fuzzed_schema_is_the_one_the_server_serves(server: Server) -> None:
    with server.client() as client:
        assert client.get("/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_endpoint_holds_its_schema_under_fuzzing(case: schemathesis.Case, server: Server) -> None:
    keep_the_rules_json_schema_cannot_state(case.body)
    response = case.call_and_validate(base_url=server.url)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
