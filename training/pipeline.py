"""`train`: data in, a served-ready checkpoint or ensemble out (weights, reward.json, report).

Each member is trained by `trainer.fit_member`, then opened with the serving loader to fit its
normalization and temperature on exactly the rewards `reward-serve` will return. Under a distributed
launch only the main process writes into the output directory.
"""

from __future__ import annotations

import logging
import platform
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reward_model.checkpoint import (
    Calibration,
    EnsembleManifest,
    EnsembleMember,
    InputFormat,
    Normalization,
    RewardMetadata,
    save_manifest,
    save_metadata,
)
from reward_model.loading import LoadOptions, open_reward_model
from training.calibration import fit_length, fit_temperature
from training.config import RewardTrainingConfig
from training.data import LoadStats, PreferenceGroup, load_preferences
from training.evaluate import TRAIN_ROWS_FILE, score_checkpoint, score_pairs, write_evaluation
from training.trainer import FitResult, MemberRun, fit_member, format_type

log = logging.getLogger(__name__)


def split_holdout(
    groups: list[PreferenceGroup], fraction: float, seed: int
) -> tuple[list[PreferenceGroup], list[PreferenceGroup]]:
    """Deterministic train/validation split by group."""
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(groups) * fraction)) if fraction > 0 else 0
    holdout = set(order[:held])
    return [g for i, g in enumerate(groups) if i not in holdout], [
        g for i, g in enumerate(groups) if i in holdout
    ]


def finish_member(run: MemberRun, fit: FitResult) -> None:
    """Write a trained member's reward.json, validation report and training row hashes (main process)."""
    metrics = finalize_checkpoint(run, fit)
    _write_rows(run.output, run.train_groups)
    if metrics:
        log.info("%s: held-out accuracy %.3f on %d pairs", run.label, metrics["accuracy"], metrics["pairs"])


def finalize_checkpoint(run: MemberRun, fit: FitResult) -> dict[str, Any]:
    """Open the checkpoint as served to fit normalization and temperature; write reward.json and report."""
    config, output, eval_groups, seed = run.config, run.output, run.eval_groups, run.seed
    input_format = InputFormat(type=format_type(config))
    save_metadata(output, RewardMetadata(max_length=fit.max_length, input_format=input_format))
    model = open_reward_model(output, LoadOptions(device=config.device))
    [member] = model.members
    log.info("%s: scoring the training and held-out responses for normalization and calibration", run.label)
    rewards = np.array(member.score_sequences([ids for g in fit.train_set for ids in g.input_ids]))
    normalization = Normalization(mean=float(rewards.mean()), std=max(float(rewards.std()), 1e-6))
    tokens = np.array([t for g in fit.train_set for t in g.response_tokens], dtype=np.float64)
    length = fit_length(rewards, tokens) if len(tokens) == len(rewards) else None
    metrics: dict[str, Any] = {}
    temperature = 1.0
    if eval_groups:
        scores, _ = score_pairs(model, eval_groups)
        temperature = fit_temperature(scores.margins)
        metrics = write_evaluation(
            scores, temperature, output / "eval", title=f"Validation report: {output.name}", seed=seed
        )
    metadata = RewardMetadata(
        max_length=fit.max_length,
        input_format=input_format,
        normalization=normalization,
        calibration=Calibration(temperature=temperature),
        length=length,
        provenance={
            "base_model": str(config.model),
            "seed": seed,
            "data": run.stats.as_dict(),
            "train_groups": len(fit.train_set),
            "eval_groups": len(eval_groups),
            "training_loss": fit.training_loss,
            "world_size": fit.world_size,
            "optimizer_steps": fit.steps,
            "precision": fit.precision,
            "config": asdict(config),
            "eval_metrics": {k: v for k, v in metrics.items() if k != "accuracy_by_length"},
            "software": _versions(),
        },
    )
    save_metadata(output, metadata)
    return metrics


def _versions() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def train(config: RewardTrainingConfig) -> Path:
    """Load data, split, and train one model or an ensemble; returns the output directory.

    Under torchrun or `accelerate launch`, every process trains every member together; then the main
    process alone finishes the checkpoints (calibration, reports, reward.json, ensemble.json) while the
    others return: no process waits in a collective, with its timeout, on work that only one does.
    """
    if config.model is None or not config.data or config.output is None:
        raise ValueError("--model, --data and --output are required (or --preset demo)")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    output = Path(config.output)
    groups, stats = load_preferences(config.data, skip_invalid=config.skip_invalid)
    if config.eval_data:
        eval_groups, eval_stats = load_preferences(config.eval_data, skip_invalid=config.skip_invalid)
        stats.files.update(eval_stats.files)
        train_groups = groups
    else:
        train_groups, eval_groups = split_holdout(groups, config.eval_fraction, config.seed)
    log.info(
        "training on %d groups, validating on %d; skipped: %s",
        len(train_groups),
        len(eval_groups),
        dict(stats.skipped) or "none",
    )
    runs = member_runs(config, train_groups, eval_groups, stats, output)
    fits = [fit_member(run) for run in runs]
    finished = [fit for fit in fits if fit is not None]
    if len(finished) < len(runs):  # not the main process: training was its whole share
        return output
    for run, fit in zip(runs, finished, strict=True):
        finish_member(run, fit)
    if config.ensemble > 1:
        finish_ensemble(config, output, eval_groups)
    return output


def member_runs(
    config: RewardTrainingConfig,
    train_groups: list[PreferenceGroup],
    eval_groups: list[PreferenceGroup],
    stats: LoadStats,
    output: Path,
) -> list[MemberRun]:
    """The one model into `output`, or K members into `output/member-i` with seeds seed + i."""
    what = "the demo model" if config.preset == "demo" else output.name
    if config.ensemble <= 1:
        label = f"training {what}"
        return [MemberRun(config, train_groups, eval_groups, stats, output, config.seed, label)]
    runs = []
    for index in range(config.ensemble):
        seed = config.seed + index
        member_groups = train_groups
        if config.bootstrap:
            rng = random.Random(seed)
            member_groups = [train_groups[rng.randrange(len(train_groups))] for _ in train_groups]
        label = f"training {what} (member {index + 1} of {config.ensemble})"
        runs.append(
            MemberRun(config, member_groups, eval_groups, stats, output / f"member-{index}", seed, label)
        )
    return runs


def finish_ensemble(config: RewardTrainingConfig, output: Path, eval_groups: list[PreferenceGroup]) -> None:
    """Write ensemble.json over the finished members, calibrated and reported as served (main process)."""
    members = [EnsembleMember(path=f"member-{i}", name=f"member-{i}") for i in range(config.ensemble)]
    provenance: dict[str, Any] = {
        "base_model": str(config.model),
        "members": config.ensemble,
        "seed": config.seed,
    }
    manifest = EnsembleManifest(members=members, provenance=provenance)
    save_manifest(output, manifest)
    if eval_groups:
        # The ensemble as served (members standardized, then aggregated), calibrated on its own.
        scores, _ = score_checkpoint(output, eval_groups, LoadOptions(device=config.device))
        manifest.calibration = Calibration(temperature=fit_temperature(scores.margins))
        report = write_evaluation(
            scores,
            manifest.calibration.temperature,
            output / "eval",
            title=f"Validation report: ensemble {output.name}",
            seed=config.seed,
        )
        manifest.provenance["eval_metrics"] = {k: v for k, v in report.items() if k != "accuracy_by_length"}
        save_manifest(output, manifest)
        log.info("ensemble of %d: held-out accuracy %.3f", config.ensemble, report["accuracy"])


def _write_rows(output: Path, groups: list[PreferenceGroup]) -> None:
    """Row hashes of the training data, so `reward-eval` can refuse to evaluate on them."""
    (output / TRAIN_ROWS_FILE).write_text("\n".join(sorted({g.row_hash for g in groups})) + "\n")
