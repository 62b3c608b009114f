"""The demo model served when `reward-serve` gets no `--model`: 3 MiniLMs fine-tuned on the bundled data.

It is trained on first use (6 to 15 minutes on 2 CPU cores: bf16 where the CPU has it natively) and
cached; nothing is downloaded.
`reward-serve` reaches the trainer only through this module, lazily, on that first start.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from reward_model.checkpoint import ENSEMBLE_FILE

log = logging.getLogger(__name__)


def demo_model_dir() -> Path:
    """Where the demo checkpoint lives: `$REWARD_DEMO_DIR`, else the user's cache."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reward-server" / "demo"
    return Path(os.environ.get("REWARD_DEMO_DIR", default))


def ensure_demo_model(train: Callable[[Path], object] | None = None) -> Path:
    """Return the demo checkpoint, training it from the bundled data first if it is missing.

    It is trained into a partial directory beside the target and renamed into place only when
    complete, so a run stopped halfway (SIGINT, SIGKILL) never leaves a model that a later start would
    serve; that later start clears what was left and trains again. `train` replaces the real training
    (tests)."""
    target = demo_model_dir()
    if (target / ENSEMBLE_FILE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in [target, *target.parent.glob(f".{target.name}.partial-*")]:
        if leftover.exists():  # an interrupted earlier run: never served, never reused
            shutil.rmtree(leftover)
    log.info("no demo model in %s yet: training it on the bundled HH-RLHF sample (6 to 15 min)", target)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    if train is None:
        from training.presets import train_demo

        train = train_demo
    try:
        train(partial)
        os.replace(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    log.info("demo model ready in %s", target)
    return target


def main() -> None:
    """`python -m training.demo`: the deployment's one-off step that trains the demo before serving it.

    It does nothing when `REWARD_MODEL` names a model, and nothing when the demo is already there, so
    compose runs it before every start of the server at no cost after the first."""
    from reward_model.console import configure_logging

    configure_logging(os.environ.get("REWARD_LOG_LEVEL", "info"))
    if os.environ.get("REWARD_MODEL"):
        log.info("REWARD_MODEL is %s: no demo model needed", os.environ["REWARD_MODEL"])
        return
    ensure_demo_model()


if __name__ == "__main__":
    main()
