"""The deployment's moving parts run for real: two `reward-serve` replicas behind nginx with the project's
own deploy/nginx.conf, scraped by a real Prometheus with deploy/prometheus.yml, queried the way the
Grafana dashboard queries it. Only the addresses are adjusted: Docker's DNS name `reward` becomes the
two replicas' loopback addresses. nginx and Prometheus are Debian's packages (`make deploy-tools`)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bench.processes import stop
from bench.stack import DASHBOARD, REPO, start_nginx, start_prometheus
from tests.helpers import (
    Server,
    exposed_metric_names,
    free_port,
    promql_metric_names,
    start_server,
    stop_server,
    tool,
    wait_until_ready,
)

PAIRS = [("how do I bake bread?", "knead flour, water and yeast."), ("hi", "hello! how can I help?")]


@dataclass
class Stack:
    replicas: list[Server]
    lb_url: str
    prometheus_url: str


@pytest.fixture(scope="module")
def stack(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx, prometheus = tool("nginx"), tool("prometheus")
    tmp = tmp_path_factory.mktemp("stack")
    args = ("--max-wait-ms", "5", "--max-body-bytes", "4096")
    replicas = [start_server(llama_dir, tmp, *args, wait_ready=False) for _ in range(2)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for replica in replicas:  # started together, waited for in turn
            wait_until_ready(replica)
        addresses = [r.url.removeprefix("http://") for r in replicas]
        lb_port, prom_port = free_port(), free_port()
        processes.append(start_nginx(nginx, addresses, lb_port, tmp))
        processes.append(start_prometheus(prometheus, addresses, prom_port, tmp))
        lb_url, prom_url = f"http://127.0.0.1:{lb_port}", f"http://127.0.0.1:{prom_port}"
        yield Stack(replicas, lb_url, prom_url)
    finally:
        for process in processes:
            stop(process)
        for replica in replicas:
            stop_server(replica)


def score(url: str, pairs: list[tuple[str, str]], client: httpx.Client | None = None) -> list[float]:
    body = {"items": [{"prompt": p, "response": r} for p, r in pairs]}
    response = (client or httpx).post(f"{url}/score", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json()["rewards"])


def requests_served(replica: Server) -> float:
    text = httpx.get(f"{replica.url}/metrics").text
    return sum(
        map(float, re.findall(r'^reward_requests_total\{endpoint="/score",status="200"\} (\S+)$', text, re.M))
    )


def test_the_load_balancer_spreads_requests_and_changes_no_reward(stack: Stack):
    direct = score(stack.replicas[0].url, PAIRS)
    before = [requests_served(r) for r in stack.replicas]
    # one kept-alive connection, so one nginx worker and its balancing state: with a connection per
    # request, each of several workers could send its first request to the same replica
    with httpx.Client() as client:
        through = [score(stack.lb_url, PAIRS, client) for _ in range(8)]
    assert all(rewards == pytest.approx(direct, abs=1e-5) for rewards in through)
    served = [requests_served(r) - b for r, b in zip(stack.replicas, before, strict=True)]
    assert sum(served) == 8 and min(served) >= 1, served


def test_the_load_balancer_passes_the_services_own_errors(stack: Stack):
    response = httpx.post(f"{stack.lb_url}/score", json={"items": [{"prompt": "x" * 8000, "response": "y"}]})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"
    response = httpx.post(f"{stack.lb_url}/score", json={"items": []})
    assert response.status_code == 422 and set(response.json()) == {"error"}


def test_a_refusing_replica_is_skipped(stack: Stack, tmp_path: Path):
    """A replica that is gone (refused connections) costs no request: nginx retries on the next."""
    dead = f"127.0.0.1:{free_port()}"
    port = free_port()
    nginx = start_nginx(tool("nginx"), [dead, stack.replicas[1].url.removeprefix("http://")], port, tmp_path)
    try:
        direct = score(stack.replicas[1].url, PAIRS)
        assert all(
            score(f"http://127.0.0.1:{port}", PAIRS) == pytest.approx(direct, abs=1e-5) for _ in range(6)
        )
    finally:
        stop(nginx)


def query(stack: Stack, expr: str) -> list[dict[str, object]]:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def wait_for(stack: Stack, expr: str, what: str) -> list[dict[str, object]]:
    """Poll Prometheus (bounded) until `expr` has a result: scrapes come every 5 s."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if result := query(stack, expr):
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never saw {what}: {expr}")


def test_prometheus_scrapes_every_replica_and_answers_the_dashboards_queries(stack: Stack):
    # a scrape of each replica before the load and one after it: rate() has an increase to show
    wait_for(stack, "count(reward_ready) == 2", "both replicas")
    for _ in range(6):
        score(stack.lb_url, PAIRS)
    served = sum(requests_served(r) for r in stack.replicas)
    # both replicas scraped twice since the requests: rate() and the per-replica panels have data
    wait_for(
        stack, f'sum(reward_requests_total{{endpoint="/score",status="200"}}) >= {served}', "the requests"
    )

    [total] = query(stack, 'sum(reward_requests_total{endpoint="/score",status="200"})')
    assert float(total["value"][1]) == served  # type: ignore[index]
    [p95] = query(
        stack,
        'histogram_quantile(0.95, sum by (le) (reward_request_duration_seconds_bucket{endpoint="/score"}))',
    )
    assert 0 < float(p95["value"][1]) < 30  # type: ignore[index]

    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_metric_names(httpx.get(f"{stack.replicas[0].url}/metrics").text) | {"up"}
    job = yaml.safe_load((REPO / "deploy/prometheus.yml").read_text())["scrape_configs"][0]["job_name"]
    results = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m")
            assert promql_metric_names(expr) <= exposed, (panel["title"], promql_metric_names(expr) - exposed)
            assert "job=" not in expr or f'job="{job}"' in expr, expr
            results[(panel["title"], target["refId"])] = query(stack, expr)
    readiness = results[("Readiness per replica", "A")]
    assert sorted(float(r["value"][1]) for r in readiness) == [1.0, 1.0]  # type: ignore[index]
    assert {r["metric"]["instance"] for r in readiness} == {
        r.url.removeprefix("http://") for r in stack.replicas
    }  # type: ignore[index]
    p99 = [
        r for r in results[("Request latency p50 / p95 / p99", "C")] if r["metric"] == {"endpoint": "/score"}
    ]
    for key, series in [(("Throughput", "A"), results[("Throughput", "A")]), (("/score p99", "C"), p99)]:
        values = [float(r["value"][1]) for r in series]  # type: ignore[index]
        assert values and all(math.isfinite(v) and v > 0 for v in values), (key, series)
    assert sum(float(r["value"][1]) for r in results[("Reward distribution", "A")]) > 0  # type: ignore[index]


def test_the_container_healthcheck_follows_readiness(stack: Stack):
    """`reward-healthcheck`, the image's HEALTHCHECK, reads the server's own settings (its port)."""
    port = stack.replicas[0].url.rsplit(":", 1)[1]
    command = [str(Path(sys.executable).parent / "reward-healthcheck")]
    ready = subprocess.run(command, env={**os.environ, "REWARD_PORT": port}, capture_output=True, text=True)
    assert ready.returncode == 0 and ready.stderr == ""
    gone = subprocess.run(
        command, env={**os.environ, "REWARD_PORT": str(free_port())}, capture_output=True, text=True
    )
    assert gone.returncode == 1 and gone.stderr.startswith(
        "reward-healthcheck: no answer from http://127.0.0.1:"
    )
    assert len(gone.stderr.strip().splitlines()) == 1
