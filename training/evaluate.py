"""Evaluate a reward checkpoint on preference pairs: accuracy, calibration, length bias, plots, report.

The checkpoint or ensemble is opened by `reward_model`'s one loader and combined by its one combiner,
so the numbers (per-pair rewards and probabilities included) are exactly what `reward-serve` returns.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reward_model.checkpoint import is_ensemble, load_manifest
from reward_model.ensemble import LengthControl, preference_probability
from reward_model.formatting import RewardInput
from reward_model.loading import LoadOptions, RewardModel, open_reward_model
from training.calibration import expected_calibration_error, pair_nll
from training.data import PreferenceGroup
from training.report import write_plots, write_report

log = logging.getLogger(__name__)

TRAIN_ROWS_FILE = "training_rows.txt"
PAIRS_FILE = "pairs.jsonl"


@dataclass
class PairScores:
    """Rewards and response lengths of every evaluated pair, chosen first, as the service reports them."""

    chosen: np.ndarray
    rejected: np.ndarray
    chosen_tokens: np.ndarray
    rejected_tokens: np.ndarray
    pairs: list[tuple[int, int, int]]
    """(group, chosen response, rejected response) of each row."""

    @property
    def margins(self) -> np.ndarray:
        """r_chosen - r_rejected per pair."""
        margins: np.ndarray = self.chosen - self.rejected
        return margins


def score_pairs(model: RewardModel, groups: Sequence[PreferenceGroup]) -> tuple[PairScores, float]:
    """Score every pair of every group as served; returns the scores and the temperature on their scale.

    A single model reports raw rewards and its own temperature; an ensemble reports its members'
    standardized rewards combined by the manifest's aggregation, as `/compare` does by default.
    """
    items: list[RewardInput] = []
    offsets: list[int] = []
    for group in groups:
        offsets.append(len(items))
        items.extend(group.inputs())
    rewards = served_rewards(model, items)
    combiner = model.combiner
    normalized = combiner.normalizes(False)
    lengths: dict[str, int] = {}
    texts = sorted({r for g in groups for r in g.responses})
    if texts:
        tokenizer = model.members[0].tokenizer
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        lengths = {t: len(x) for t, x in zip(texts, ids, strict=True)}
    pairs = [(gi, w, lo) for gi, g in enumerate(groups) for w, lo, _ in g.pairs]
    rows = [
        (
            rewards[offsets[gi] + w],
            rewards[offsets[gi] + lo],
            lengths[groups[gi].responses[w]],
            lengths[groups[gi].responses[lo]],
        )
        for gi, w, lo in pairs
    ]
    columns = np.array(rows, dtype=np.float64).reshape(-1, 4).T
    scores = PairScores(columns[0], columns[1], columns[2], columns[3], pairs)
    return scores, combiner.temperature(normalized)


def served_rewards(
    model: RewardModel, items: Sequence[RewardInput], length: LengthControl | None = None
) -> list[float]:
    """Each item's reward as `/score` returns it by default: a single model's raw reward, or the
    ensemble's members' standardized rewards combined by the manifest's aggregation; with `length`,
    adjusted as the service's length control does."""
    encoded = model.encode(items)
    member_rewards = model.score(items, encoded)
    combiner = model.combiner
    normalized = combiner.normalizes(False)
    return [
        combiner.combine(
            [m[i] for m in member_rewards],
            normalized=normalized,
            length=length,
            response_tokens=[e[i].response_tokens for e in encoded],
        ).reward
        for i in range(len(items))
    ]


def bootstrap_interval(correct: np.ndarray, *, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    means = rng.choice(correct, size=(samples, len(correct)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v), dtype=np.float64)
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(np.asarray(x, dtype=np.float64)), ranks(np.asarray(y, dtype=np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def compute_metrics(scores: PairScores, temperature: float, *, seed: int = 0) -> dict[str, Any]:
    """Every number of the evaluation report, as JSON-ready values."""
    margins = scores.margins
    correct = (margins > 0).astype(np.float64)
    low, high = bootstrap_interval(correct, seed=seed)
    longer = np.sign(scores.chosen_tokens - scores.rejected_tokens)
    differing = longer != 0
    mean_len = (scores.chosen_tokens + scores.rejected_tokens) / 2.0
    edges = np.unique(np.quantile(mean_len, [0.0, 0.25, 0.5, 0.75, 1.0]))
    buckets = []
    for i in range(len(edges) - 1):
        upper = mean_len <= edges[i + 1] if i == len(edges) - 2 else mean_len < edges[i + 1]
        mask = (mean_len >= edges[i]) & upper
        if mask.any():
            buckets.append(
                {
                    "tokens_from": float(edges[i]),
                    "tokens_to": float(edges[i + 1]),
                    "pairs": int(mask.sum()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    all_rewards = np.concatenate([scores.chosen, scores.rejected])
    all_lengths = np.concatenate([scores.chosen_tokens, scores.rejected_tokens])
    prefer_longer = float((longer[differing] > 0).mean()) if differing.any() else float("nan")
    model_prefers_longer = (
        float((np.sign(margins[differing]) == longer[differing]).mean()) if differing.any() else float("nan")
    )
    return {
        "pairs": len(margins),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": [low, high],
        "mean_margin": float(margins.mean()),
        "nll": pair_nll(margins, 1.0),
        "nll_calibrated": pair_nll(margins, temperature),
        "temperature": temperature,
        "ece": expected_calibration_error(margins, 1.0),
        "ece_calibrated": expected_calibration_error(margins, temperature),
        "accuracy_by_length": buckets,
        "length_bias": {
            "chosen_is_longer": prefer_longer,
            "model_prefers_longer": model_prefers_longer,
            "spearman_reward_vs_length": spearman(all_rewards, all_lengths),
            "length_only_baseline_accuracy": max(prefer_longer, 1.0 - prefer_longer)
            if not math.isnan(prefer_longer)
            else float("nan"),
        },
        "reward_mean": float(all_rewards.mean()),
        "reward_std": float(all_rewards.std()),
    }


def score_checkpoint(
    checkpoint: Path, groups: Sequence[PreferenceGroup], options: LoadOptions | None = None
) -> tuple[PairScores, float]:
    """Pair scores and calibration temperature of a checkpoint or an ensemble directory, as served."""
    return score_pairs(open_reward_model(checkpoint, options), groups)


def trained_rows(checkpoint: Path) -> set[str]:
    """Row hashes of everything a checkpoint (or any ensemble member) was trained on."""
    paths = (
        [checkpoint / m.path for m in load_manifest(checkpoint).members]
        if is_ensemble(checkpoint)
        else [checkpoint]
    )
    rows: set[str] = set()
    for path in paths:
        if (path / TRAIN_ROWS_FILE).exists():
            rows.update((path / TRAIN_ROWS_FILE).read_text().split())
    return rows


def evaluate_checkpoint(
    checkpoint: Path,
    groups: Sequence[PreferenceGroup],
    out: Path,
    *,
    temperature: float | None = None,
    allow_overlap: bool = False,
    options: LoadOptions | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Score the pairs with a checkpoint or ensemble; write metrics.json, plots and report.md into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    warnings = []
    seen = trained_rows(checkpoint)
    overlap = sum(1 for g in groups if g.row_hash in seen)
    if overlap:
        message = f"{overlap} of {len(groups)} evaluation rows were in the training data"
        if not allow_overlap:
            raise ValueError(message + "; refusing (pass --allow-overlap to evaluate anyway, flagged)")
        warnings.append(message + ": these numbers are not held-out performance")
        log.warning(message)
    scores, own_temperature = score_checkpoint(checkpoint, groups, options)
    temperature = own_temperature if temperature is None else temperature
    return write_evaluation(
        scores, temperature, out, title=title or f"Evaluation of {checkpoint.name}", warnings=warnings
    )


def write_evaluation(
    scores: PairScores,
    temperature: float,
    out: Path,
    *,
    title: str,
    warnings: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Compute the metrics; write metrics.json, pairs.jsonl, the plots and report.md into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(scores, temperature, seed=seed)
    metrics["warnings"] = list(warnings)
    plots = write_plots(scores, temperature, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_pairs(scores, temperature, out / PAIRS_FILE)
    write_report(metrics, plots, out, title=title)
    return metrics


def write_pairs(scores: PairScores, temperature: float, path: Path) -> None:
    """One JSON line per pair: which responses, their rewards, and P(chosen better) as `/compare` gives it."""
    with path.open("w", encoding="utf-8") as fh:
        for (group, chosen, rejected), rc, rr in zip(
            scores.pairs, scores.chosen, scores.rejected, strict=True
        ):
            row = {
                "group": group,
                "chosen": chosen,
                "rejected": rejected,
                "reward_chosen": float(rc),
                "reward_rejected": float(rr),
                "prob_chosen_better": preference_probability(float(rc - rr), temperature),
            }
            fh.write(json.dumps(row) + "\n")
