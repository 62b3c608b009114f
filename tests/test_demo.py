"""The demo model is trained into a partial directory and renamed into place only when complete: an
interrupted run (an exception, or SIGKILL) never leaves a model that a later start would serve."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from reward_model.checkpoint import ENSEMBLE_FILE, EnsembleManifest, EnsembleMember, save_manifest
from tests.helpers import REPO
from tests.tiny_models import save_llama
from training.demo import ensure_demo_model


def complete(path: Path) -> None:
    save_llama(path / "member-0")
    save_manifest(path, EnsembleManifest(members=[EnsembleMember(path="member-0")]))


def test_an_interrupted_run_leaves_nothing_and_the_next_one_completes(tmp_path: Path, monkeypatch):
    target = tmp_path / "cache" / "demo"
    monkeypatch.setenv("REWARD_DEMO_DIR", str(target))

    def interrupted(path: Path) -> None:
        save_llama(path / "member-0")  # half the work, no ensemble.json yet
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_demo_model(train=interrupted)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert ensure_demo_model(train=complete) == target
    assert (target / ENSEMBLE_FILE).exists() and list(target.parent.iterdir()) == [target]
    assert (
        ensure_demo_model(train=lambda path: pytest.fail("a complete demo is never trained again")) == target
    )


def test_a_killed_run_is_cleared_by_the_next_start(tmp_path: Path, monkeypatch):
    target = tmp_path / "cache" / "demo"
    monkeypatch.setenv("REWARD_DEMO_DIR", str(target))
    code = (
        "import time; from training.demo import ensure_demo_model\n"
        "def slow(path):\n"
        "    path.mkdir(parents=True); (path / 'config.json').write_text('{}'); time.sleep(120)\n"
        "ensure_demo_model(train=slow)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not list(target.parent.glob(".demo.partial-*")):
            assert time.monotonic() < deadline and process.poll() is None, "training never started"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert not target.exists()  # nothing a later start would serve
    assert ensure_demo_model(train=complete) == target
    assert list(target.parent.iterdir()) == [target]  # the killed run's partial directory is gone
