"""`reward-train` and `reward-eval` command lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _setup() -> None:
    from reward_model.console import configure_logging

    configure_logging(os.environ.get("REWARD_LOG_LEVEL", "info"))


def train_main(argv: list[str] | None = None) -> None:
    """Entry point of `reward-train`."""
    _setup()
    from transformers import HfArgumentParser

    from training import presets
    from training.config import RewardTrainingConfig
    from training.data import DataError
    from training.demo import demo_model_dir
    from training.pipeline import train

    parser = HfArgumentParser(RewardTrainingConfig)  # type: ignore[arg-type]
    (parsed,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    config: RewardTrainingConfig = parsed  # type: ignore[assignment]
    output = config.output or (str(demo_model_dir()) if config.preset == "demo" else None)
    config = presets.apply_preset(config, output or "")
    try:
        path = train(config)
    except (DataError, ValueError) as exc:
        print(f"reward-train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"reward-train: wrote {path}")


def eval_main(argv: list[str] | None = None) -> None:
    """Entry point of `reward-eval`: evaluate any reward checkpoint on preference data."""
    _setup()
    from reward_model.errors import RewardError
    from reward_model.loading import LoadOptions
    from training.data import DataError, load_preferences
    from training.evaluate import evaluate_checkpoint

    parser = argparse.ArgumentParser(prog="reward-eval", description=eval_main.__doc__)
    parser.add_argument("--model", required=True, help="Reward checkpoint directory (ours or off-the-shelf).")
    parser.add_argument(
        "--data", required=True, nargs="+", help="Preference files, any format reward-train reads."
    )
    parser.add_argument(
        "--output", required=True, help="Report directory: metrics.json, PNG plots, report.md."
    )
    parser.add_argument("--skip-invalid", action="store_true", help="Skip and count bad rows.")
    parser.add_argument(
        "--allow-overlap", action="store_true", help="Evaluate on training rows anyway, flagged."
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="Override the checkpoint's temperature."
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (as reward-serve)")
    parser.add_argument(
        "--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (as reward-serve)"
    )
    parser.add_argument(
        "--max-input-tokens", type=int, default=None, help="Cap on tokens per item (as reward-serve)."
    )
    args = parser.parse_args(argv)
    try:
        groups, stats = load_preferences(args.data, skip_invalid=args.skip_invalid)
        metrics = evaluate_checkpoint(
            Path(args.model),
            groups,
            Path(args.output),
            temperature=args.temperature,
            allow_overlap=args.allow_overlap,
            options=LoadOptions(device=args.device, dtype=args.dtype, max_input_tokens=args.max_input_tokens),
        )
    except (DataError, ValueError, RewardError) as exc:
        print(f"reward-eval: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = {k: metrics[k] for k in ("pairs", "accuracy", "accuracy_ci95", "ece", "ece_calibrated")}
    print(json.dumps({**summary, "skipped": dict(stats.skipped)}, indent=2))
