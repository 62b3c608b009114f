"""The Python client against real `reward-serve` processes: chunking, failover, retries, deadlines."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reward_client import (
    AllServersFailed,
    AsyncRewardClient,
    DeadlineExceeded,
    RetryPolicy,
    RewardClient,
    ServerError,
)
from reward_client.cli import main as client_main

from tests.helpers import Server, start_server, stop_server

ITEMS = [{"prompt": f"question {i}: what is {i} plus {i}?", "response": f"it is {2 * i}."} for i in range(10)]


@pytest.fixture(scope="module")
def small_server(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """At most 3 items per request: chunking is easy to reach."""
    server = start_server(llama_dir, tmp_path_factory.mktemp("small"), "--max-items-per-request", "3")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def tight_server(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """At most 4 waiting items: a request of 5 is always refused with 429 and Retry-After."""
    server = start_server(llama_dir, tmp_path_factory.mktemp("tight"), "--max-queue-items", "4")
    yield server
    stop_server(server)


def one_by_one(server: Server, items: list[dict[str, str]]) -> list[float]:
    with server.client() as http:
        return [http.post("/score", json={"items": [item]}).json()["rewards"][0] for item in items]


def requests_seen(server: Server, endpoint: str) -> float:
    """Requests the server counted for an endpoint, from its own Prometheus metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("reward_requests_total{") and f'endpoint="{endpoint}"' in line
    )


def test_chunks_follow_the_servers_limit_and_keep_input_order(small_server: Server):
    with RewardClient(small_server.url) as client:
        assert client.info().limits.max_items_per_request == 3
        result = client.score(ITEMS[:4] + ITEMS[:4] + ITEMS[4:])  # 14 items: chunks of 3, 3, 3, 3, 2
    expected = one_by_one(small_server, ITEMS)
    assert result.rewards == pytest.approx(expected[:4] + expected[:4] + expected[4:], abs=1e-5)
    assert len(result.truncated) == len(result.num_tokens) == len(ITEMS) + 4


async def test_best_of_n_past_the_limit_ranks_the_same_as_the_server(small_server: Server):
    responses = [item["response"] for item in ITEMS[:3]]
    async with AsyncRewardClient(small_server.url) as client:
        within = await client.best_of_n("what is 2 plus 2?", responses)
        past = await client.best_of_n("what is 2 plus 2?", responses + responses[:2], top_k=2)
    assert past.rewards[:3] == pytest.approx(within.rewards, abs=1e-5)
    assert past.ranking == sorted(range(5), key=lambda i: (-past.rewards[i], i))[:2]


async def test_overload_is_retried_after_retry_after_and_then_reported(tight_server: Server):
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    before = requests_seen(tight_server, "/score")
    policy = RetryPolicy(max_attempts=3)
    async with AsyncRewardClient(
        tight_server.url, policy=policy, sleep=record, max_items_per_request=5
    ) as client:
        with pytest.raises(ServerError) as caught:  # 5 items never fit a queue of 4: always 429
            await client.score(ITEMS[:5])
    assert caught.value.status == 429 and caught.value.type == "overloaded"
    assert waits == [1.0, 1.0]  # the server's Retry-After, between the three attempts
    assert requests_seen(tight_server, "/score") == before + 3


async def test_a_request_the_server_refuses_is_never_retried(small_server: Server):
    before = requests_seen(small_server, "/score")
    async with AsyncRewardClient(small_server.url) as client:
        with pytest.raises(ServerError) as caught:
            await client.score([{"messages": [{"role": "user", "content": "no assistant turn"}]}])
    assert caught.value.status == 422 and caught.value.type == "invalid_request"
    assert "last message must have role 'assistant'" in caught.value.message
    assert requests_seen(small_server, "/score") == before + 1


async def test_the_deadline_bounds_the_whole_call(tight_server: Server):
    policy = RetryPolicy(max_attempts=10, deadline=0.5)
    async with AsyncRewardClient(tight_server.url, policy=policy) as client:
        with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.5 s"):
            await client.score(ITEMS[:5])  # 429 each time, and Retry-After (1 s) is past the deadline


async def test_a_server_that_dies_mid_run_loses_no_reward(llama_dir: Path, tmp_path: Path):
    doomed, healthy = start_server(llama_dir, tmp_path), start_server(llama_dir, tmp_path)
    try:
        expected = one_by_one(healthy, ITEMS)
        async with AsyncRewardClient([doomed.url, healthy.url], max_items_per_request=1) as client:
            first = await client.score(ITEMS[:4])  # both servers take part
            doomed.process.kill()
            doomed.process.wait()
            rest = await asyncio.gather(*(client.score([item]) for item in ITEMS[4:]))
            assert any(s.url == doomed.url and s.out_until > 0 for s in client.pool.servers)
    finally:
        stop_server(healthy)
        stop_server(doomed)
    rewards = first.rewards + [r.rewards[0] for r in rest]
    assert rewards == pytest.approx(expected, abs=1e-5)


async def test_every_server_down_fails_the_call_with_each_servers_error():
    dead = ["http://127.0.0.1:9", "http://127.0.0.1:1"]  # discard and tcpmux: nothing listens here
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_attempts=2)
    async with AsyncRewardClient(dead, policy=policy, sleep=record, max_items_per_request=8) as client:
        with pytest.raises(AllServersFailed) as caught:
            await client.score(ITEMS[:1])
    assert set(caught.value.errors) == set(dead)


def test_the_command_line_scores_a_file_and_resumes(small_server: Server, tmp_path: Path):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({**item, "id": i}) + "\n" for i, item in enumerate(ITEMS)))
    client_main(["score", str(source), str(output), "--url", small_server.url, "--batch", "4", "--quiet"])
    full = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["id"] for row in full] == list(range(len(ITEMS)))
    assert [row["reward"] for row in full] == pytest.approx(one_by_one(small_server, ITEMS), abs=1e-5)
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:5]) + lines[5][:7])  # killed mid-write after 5 lines
    client_main(["score", str(source), str(output), "--url", small_server.url, "--batch", "4", "--quiet"])
    resumed = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["id"] for row in resumed] == list(range(len(ITEMS)))
    assert resumed[:5] == full[:5]  # kept, not rescored
    assert [row["reward"] for row in resumed] == pytest.approx([row["reward"] for row in full], abs=1e-5)


def test_the_client_installs_and_imports_without_torch(tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    source = Path(__file__).resolve().parent.parent / "client"
    client_dir = tmp_path / "client"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(source, client_dir, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(client_dir)], check=True, timeout=600)
    modules = "('torch', 'transformers', 'fastapi', 'app')"
    probe = f"import sys, reward_client; print(sorted(m for m in {modules} if m in sys.modules))"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    missing = subprocess.run([python, "-m", "pip", "show", "torch"], capture_output=True)
    assert missing.returncode != 0  # not installed at all
