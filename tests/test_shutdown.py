"""SIGTERM on a real server with a request in flight: 503 at once for readiness and new work, the
accepted request answered in full, and exit code 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import start_server, stop_server


def queued(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("reward_queue_depth_items{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_sigterm_drains_accepted_requests_and_exits_zero(llama_dir: Path, tmp_path: Path):
    # one item per forward pass: 2,000 items keep the model busy for seconds after the signal
    server = start_server(
        llama_dir,
        tmp_path,
        "--max-batch-size",
        "1",
        "--max-items-per-request",
        "4096",
        "--drain-seconds",
        "120",
    )
    items = [{"prompt": f"question {i}", "response": "an answer"} for i in range(2000)]
    answer: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: answer.append(httpx.post(f"{server.url}/score", json={"items": items}, timeout=300))
    )
    try:
        sender.start()
        deadline = time.monotonic() + 60
        while queued(server.url) < 1000:  # accepted, and most of it still waiting for the model
            assert time.monotonic() < deadline, "the request never reached the queue"
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        while httpx.get(f"{server.url}/ready").status_code == 200:
            assert time.monotonic() < deadline, "readiness never turned 503"
        ready = httpx.get(f"{server.url}/ready")
        new = httpx.post(f"{server.url}/score", json={"items": items[:1]})
        assert queued(server.url) > 0, "the drain must still be under way for this test to mean anything"
        sender.join(timeout=300)
        code = server.process.wait(timeout=60)
    finally:
        stop_server(server)
    assert ready.status_code == 503 and ready.json()["error"]["message"] == "the server is shutting down"
    assert new.status_code == 503 and new.headers["retry-after"] == "5"
    assert new.json() == {
        "error": {"type": "not_ready", "message": "the server is shutting down; retry on another replica"}
    }
    assert answer[0].status_code == 200 and len(answer[0].json()["rewards"]) == len(items)
    assert code == 0, server.log()
