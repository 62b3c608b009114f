"""`train`: data in, a served-ready checkpoint or ensemble out (weights, reward.json, report).

Each member is trained by `trainer.fit_member`, then opened with the serving loader to fit its
normalization and temperature on exactly the rewards `reward-serve` will return.
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
from training.data import PreferenceGroup, load_preferences
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


def train_member(run: MemberRun) -> dict[str, Any]:
    """Train one reward model into `run.output`, then write its reward.json and validation report."""
    fit = fit_member(run)
    if fit is None:  # not the main process
        return {}
    metrics = finalize_checkpoint(run, fit)
    if metrics:
        log.info("%s: held-out accuracy %.3f on %d pairs", run.label, metrics["accuracy"], metrics["pairs"])
    return metrics


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
    """Load data, split, and train one model or an ensemble; returns the output directory."""
    if config.model is None or not config.data or config.output is None:
        raise ValueError("--model, --data and --output are required (or --preset demo)")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
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
    what = "the demo model" if config.preset == "demo" else output.name
    if config.ensemble <= 1:
        train_member(
            MemberRun(config, train_groups, eval_groups, stats, output, config.seed, f"training {what}")
        )
        _write_rows(output, train_groups)
        return output
    members = []
    for index in range(config.ensemble):
        seed = config.seed + index
        member_groups = train_groups
        if config.bootstrap:
            rng = random.Random(seed)
            member_groups = [train_groups[rng.randrange(len(train_groups))] for _ in train_groups]
        name = f"member-{index}"
        label = f"training {what} (member {index + 1} of {config.ensemble})"
        train_member(MemberRun(config, member_groups, eval_groups, stats, output / name, seed, label))
        _write_rows(output / name, member_groups)
        members.append(EnsembleMember(path=name, name=name))
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
    return output


def _write_rows(output: Path, groups: list[PreferenceGroup]) -> None:
    """Row hashes of the training data, so `reward-eval` can refuse to evaluate on them."""
    (output / TRAIN_ROWS_FILE).write_text("\n".join(sorted({g.row_hash for g in groups})) + "\n")
