"""The demo model served when `reward-serve` gets no `--model`: 3 MiniLMs fine-tuned on the bundled data.

It is trained on first use (about 10 minutes on 2 CPU cores) and cached; nothing is downloaded.
`reward-serve` reaches the trainer only through this module, lazily, on that first start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from reward_model.checkpoint import ENSEMBLE_FILE

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
    log.info("no demo model in %s yet: training it on the bundled HH-RLHF sample (about 10 min)", target)
    from training.presets import train_demo

    train_demo(target)
    log.info("demo model ready in %s", target)
    return target
