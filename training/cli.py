"""`reward-train` and `reward-eval` command lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


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
    from accelerate import PartialState

    state = PartialState()  # the one the Trainer set up: under torchrun, this process's rank
    if state.is_main_process:
        print(f"reward-train: wrote {path}")
    state.destroy_process_group()


def eval_main(argv: list[str] | None = None) -> None:
    """Entry point of `reward-eval`: evaluate any reward checkpoint on preference data."""
    _setup()
    from reward_model.errors import RewardError
    from reward_model.loading import LoadOptions
    from training.data import DataError, load_preferences
    from training.evaluate import evaluate_checkpoint

    parser = argparse.ArgumentParser(prog="reward-eval", description=eval_main.__doc__)
    parser.add_argument("--model", help="Reward checkpoint or ensemble directory (ours or off-the-shelf).")
    parser.add_argument("--url", help="With --probes: score through this running reward-serve instead.")
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
    probes = parser.add_argument_group("reward-hacking probes")
    probes.add_argument("--probes", action="store_true", help="Run the probe suite instead of pair metrics.")
    probes.add_argument("--probe", action="append", help="Only this probe (repeatable; default: all).")
    probes.add_argument("--probe-module", action="append", default=[], help="Import to register more.")
    probes.add_argument("--probe-examples", type=int, default=200, help="Eval examples to perturb.")
    probes.add_argument(
        "--adversarial", default=None, help="Adversarial pairs file (default: the bundled one; 'none')."
    )
    probes.add_argument("--length-penalty", type=float, default=0.0, help="Score with this length penalty.")
    probes.add_argument("--length-residual", action="store_true", help="Score with the length trend removed.")
    args = parser.parse_args(argv)
    if (args.model is None) == (args.url is None):
        parser.error("give exactly one of --model and --url")
    if args.url is not None and not args.probes:
        parser.error("--url scores through a service for --probes only")
    try:
        groups, stats = load_preferences(args.data, skip_invalid=args.skip_invalid)
        if args.probes:
            options = LoadOptions(
                device=args.device, dtype=args.dtype, max_input_tokens=args.max_input_tokens
            )
            print(json.dumps(run_probe_suite(args, groups, options), indent=2))
            return
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


def run_probe_suite(args: argparse.Namespace, groups: list[Any], options: Any) -> dict[str, Any]:
    """`reward-eval --probes`: perturb the eval set, score it, write probes.json, the chart and report.md."""
    import importlib

    from training.perturbations import PERTURBATIONS
    from training.probes import (
        ADVERSARIAL_PAIRS,
        examples_from,
        load_adversarial_pairs,
        run_probes,
        write_probe_report,
    )

    for module in args.probe_module:
        importlib.import_module(module)
    unknown = sorted(set(args.probe or ()) - set(PERTURBATIONS))
    if unknown:
        raise ValueError(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(PERTURBATIONS)}")
    chosen = [PERTURBATIONS[name] for name in args.probe] if args.probe else None
    adversarial_path = args.adversarial or ADVERSARIAL_PAIRS
    adversarial = [] if args.adversarial == "none" else load_adversarial_pairs(Path(adversarial_path))
    report = run_probes(
        _scorer(args, options), examples_from(groups, args.probe_examples), chosen, adversarial
    )
    report["model"] = args.url or args.model
    report["length_control"] = {"penalty": args.length_penalty, "residual": args.length_residual}
    name = args.url or Path(args.model).name
    write_probe_report(report, Path(args.output), title=f"Evaluation of {name}")
    return {k: report[k] for k in ("examples", "vulnerable_to")} | {
        "adversarial_accuracy": report.get("adversarial_pairs", {}).get("accuracy")
    }


def _scorer(args: argparse.Namespace, options: Any) -> Any:
    """Rewards as served: from the checkpoint through the project's one loader, or from the service."""
    if args.url is not None:
        from reward_client import RewardClient

        client = RewardClient(args.url)
        asked = {"length_penalty": args.length_penalty, "length_residual": args.length_residual}

        def through_service(items: Any) -> list[float]:
            bodies = [{"messages": [{"role": r, "content": c} for r, c in item.messages]} for item in items]
            return list(client.score(bodies, **asked).rewards)

        return through_service
    from reward_model.ensemble import LengthControl
    from reward_model.loading import open_reward_model
    from training.evaluate import served_rewards

    model = open_reward_model(Path(args.model), options)
    length = LengthControl(args.length_penalty, args.length_residual)
    return lambda items: served_rewards(model, items, length)
