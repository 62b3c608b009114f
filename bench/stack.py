"""The deployment's nginx and Prometheus as local processes, from the project's own config files.

Only the addresses change: in compose, Docker's DNS name `reward` stands for every replica; here the
replicas are loopback addresses. Used by tests/test_stack.py and by `python -m bench.dashboard`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from bench.processes import REPO, start

DASHBOARD = REPO / "deploy/grafana/dashboards/reward-server.json"


def nginx_config(upstreams: list[str], port: int) -> str:
    """deploy/nginx.conf with the replicas' addresses for Docker's `reward`, and a free port."""
    text = (REPO / "deploy/nginx.conf").read_text()
    line = re.search(r"^(\s*)server reward:8000( [^;]*);$", text, re.MULTILINE)
    if line is None or "listen 8000;" not in text:
        raise ValueError("deploy/nginx.conf no longer balances `reward:8000` on port 8000")
    servers = "\n".join(f"{line.group(1)}server {address}{line.group(2)};" for address in upstreams)
    return text.replace(line.group(0), servers).replace("listen 8000;", f"listen 127.0.0.1:{port};")


def prometheus_config(targets: list[str]) -> dict[str, Any]:
    """deploy/prometheus.yml with the replicas' addresses for Docker's DNS discovery of `reward`."""
    config = yaml.safe_load((REPO / "deploy/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    [discovery] = job.pop("dns_sd_configs")
    if discovery["names"] != ["reward"] or discovery["port"] != 8000:
        raise ValueError(f"deploy/prometheus.yml no longer discovers `reward:8000`: {discovery}")
    job["static_configs"] = [{"targets": targets}]
    return dict(config)


def start_nginx(nginx: str, upstreams: list[str], port: int, work: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground with deploy/nginx.conf, its files under `work`."""
    (work / "nginx.conf").write_text(nginx_config(upstreams, port))
    command = [nginx, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "nginx-error.log")]
    command += ["-g", "daemon off; pid nginx.pid;"]
    return start(command, f"http://127.0.0.1:{port}", work / "nginx.log", timeout=60)


def start_prometheus(prometheus: str, targets: list[str], port: int, work: Path) -> subprocess.Popen[bytes]:
    """Prometheus with deploy/prometheus.yml scraping `targets`, its data under `work`."""
    (work / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(targets)))
    command = [prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}"]
    command.append(f"--web.listen-address=127.0.0.1:{port}")
    return start(command, f"http://127.0.0.1:{port}", work / "prometheus.log", "/-/ready", timeout=60)
