"""What the command lines print: our own loggers at the chosen level, third-party noise off.

At `info` a first start reads as a few plain lines; `debug` brings back every library's own output
(transformers' load reports and progress bars included).
"""

from __future__ import annotations

import logging
import os

OWN_LOGGERS = ("app", "reward_model", "training", "bench")


def configure_logging(level: str = "info") -> None:
    """Set up logging for a command line: plain lines at info, library detail at debug."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    debug = level.lower() == "debug"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if debug else "%(asctime)s %(message)s",
        datefmt=None if debug else "%H:%M:%S",
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    if not debug:
        import transformers

        transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
