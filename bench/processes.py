"""Starting the servers the benchmarks measure: a free loopback port, a bounded wait for readiness, a stop."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, what: str, timeout: float) -> None:
    """Poll `url` until it answers 200; raise with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def start(
    command: list[str], url: str, log: Path, ready_path: str = "/ready", timeout: float = 600
) -> subprocess.Popen[bytes]:
    """Start a server process in the repository and wait (bounded) until `url + ready_path` answers 200."""
    with log.open("wb") as fh:
        process = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_ready(process, f"{url}{ready_path}", log, " ".join(command[:3]), timeout)
    except RuntimeError:
        process.kill()
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server drains), then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
