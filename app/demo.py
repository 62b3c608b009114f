"""The demo model served when `reward-serve` gets no `--model`: 3 MiniLMs fine-tuned on the bundled data.

It is trained on first use (about 10 minutes on 2 CPU cores) and cached; nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from app.checkpoint import ENSEMBLE_FILE

log = logging.getLogger(__name__)


def demo_model_dir() -> Path:
    """Where the demo checkpoint lives: `$REWARD_DEMO_DIR`, else the user's cache."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reward-server" / "demo"
    return Path(os.environ.get("REWARD_DEMO_DIR", default))


def ensure_demo_model() -> Path:
    """Return the demo checkpoint, training it from the bundled data first if it is missing."""
    target = demo_model_dir()
    if (target / ENSEMBLE_FILE).exists():
        return target
    log.warning(
        "no demo model at %s: training it now on the bundled HH-RLHF data (~10 min on 2 cores)", target
    )
    from training.presets import train_demo  # the trainer is only needed on this first run

    train_demo(target)
    return target
