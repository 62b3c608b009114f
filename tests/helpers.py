"""Helpers shared by the tests: real servers, an in-process service, direct reference forward passes.

Every test module takes its helpers from here; fixtures live in `conftest.py`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from app.metrics import Metrics
from app.runner import RewardModelRunner
from app.service import RewardService
from app.settings import Settings
from reward_model.formatting import InputFormatter, RewardInput

if TYPE_CHECKING:
    import promql_parser

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "data" / "hh-rlhf-harmless-base-sample.jsonl.gz"

ITEMS = [
    RewardInput.from_prompt_response(
        "how do I bake bread?", "mix flour, water, salt and yeast, then knead it."
    ),
    RewardInput.from_prompt_response("hi", "no"),
    RewardInput.from_prompt_response("what is two plus two? " * 6, "two plus two is four."),
    RewardInput.from_messages(
        [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "you are welcome"},
        ]
    ),
]
"""Service-level items: prompt strings, a long prompt, and a conversation with a system turn."""


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition the server reaches on its own."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


class GatedRunner(RewardModelRunner):
    """The real model behind a gate: each forward pass records its batch's prefix lengths (one per
    item), then waits until the test opens the gate. Call `reset()` first."""

    entered = threading.Event()
    gate = threading.Event()
    batches: ClassVar[list[list[int]]] = []

    @classmethod
    def reset(cls) -> None:
        cls.entered.clear()
        cls.gate.clear()
        cls.batches.clear()

    def forward(
        self, sequences: Sequence[Sequence[int]], prefix_lengths: Sequence[int] | None = None
    ) -> list[float]:
        type(self).batches.append(list(prefix_lengths or [0] * len(sequences)))
        type(self).entered.set()
        assert type(self).gate.wait(timeout=60), "the test never opened the gate"
        return super().forward(sequences, prefix_lengths)


class GatedService(RewardService):
    runner_type = GatedRunner


def hh_items(count: int) -> list[dict[str, object]]:
    """The first `count` (prompt messages, response) items of the bundled HH-RLHF sample."""
    from bench.__main__ import hh_items as bundled

    return bundled(count)


def direct_rewards(model_dir: Path, sequences: Sequence[Sequence[int]]) -> list[float]:
    """Reference: one unpadded plain-transformers forward pass per token id list, raw logits."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [float(model(input_ids=torch.tensor([list(x)])).logits[0, 0]) for x in sequences]


def direct_pair_rewards(
    model_dir: Path, pairs: Sequence[tuple[str, str]], max_length: int = 128
) -> list[float]:
    """Reference: (prompt, response) pairs through the formatter and `direct_rewards`."""
    fmt = InputFormatter(AutoTokenizer.from_pretrained(model_dir), input_format="auto", max_length=max_length)
    ids = [e.input_ids for e in fmt.encode([RewardInput.from_prompt_response(p, r) for p, r in pairs])]
    return direct_rewards(model_dir, ids)


@asynccontextmanager
async def running(
    model: Path, service_type: type[RewardService] = RewardService, **overrides: object
) -> AsyncIterator[RewardService]:
    """A loaded, started service in this event loop (no warm-up), stopped on exit."""
    settings = Settings(model=str(model), **{"warmup": False, "max_wait_ms": 1.0, **overrides})  # type: ignore[arg-type]
    service = service_type(settings, Metrics())
    service.load(model)
    service.start()
    try:
        yield service
    finally:
        await service.stop()


def wait_ready(client: TestClient) -> None:
    """Poll an in-process app's /ready (bounded) until its model is loaded."""
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "app never became ready"
        time.sleep(0.05)


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop on 127.0.0.1 and a free port; yield its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 60)


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running `reward-serve` process and a client for it."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    model: Path, tmp: Path, *args: str, wait_ready: bool = True, env: dict[str, str] | None = None
) -> Server:
    """Start `reward-serve` on 127.0.0.1 and an ephemeral port; wait (bounded) for /ready.
    `env` is added to this process's environment for the server."""
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    command = [sys.executable, "-m", "app", "--model", str(model), "--port", str(port)]
    command += ["--host", "127.0.0.1", "--log-level", "warning", *args]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: Server) -> None:
    """Wait (bounded) for a started server's /ready; stop it and raise with its log if it never is."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"reward-serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"reward-serve not ready in 120 s:\n{server.log()}")


def startup_error(model: Path, *args: str) -> str:
    """Run `reward-serve` where it must refuse to start: assert exit 2 and one line; return that line."""
    command = [sys.executable, "-m", "app", "--model", str(model), "--port", "0", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reward-serve: error: "), result.stderr
    return lines[0]


def stop_server(server: Server) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def promql_selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """The series selectors of a PromQL expression, by a real PromQL parser; a syntax error raises.
    (Imported here: the vLLM environment runs these helpers without the dev tools.)"""
    import promql_parser

    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    return {selector.name for selector in promql_selectors(expr)}


def exposed_metric_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition can carry, from its `# TYPE` lines, so that
    labelled families with no sample yet count too."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        if kind == "counter":  # the TYPE line names a counter with or without `_total`
            family = family.removesuffix("_total") + "_total"
        names.update(family + suffix for suffix in suffixes.get(kind, ("",)))
    return names


def tool(name: str) -> str:
    """The path of a deployment tool (Debian's nginx, prometheus, docker-compose). Absent: a skip, or a
    failure under `make test`, which installs them (`make deploy-tools`) and sets REWARD_REQUIRE_TOOLS."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{name} is not installed (`make deploy-tools` installs it)"
        if os.environ.get("REWARD_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return path
