"""Evaluate a reward checkpoint on preference pairs: accuracy, calibration, length bias, plots, report.

Scoring goes through the serving code (`RewardModelRunner` and the shared `InputFormatter`), so the
numbers describe exactly what `reward-serve` would return.
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

from app.checkpoint import is_ensemble, load_manifest, load_metadata
from app.ensemble import aggregate
from app.formatting import InputFormatter
from app.runner import RewardModelRunner
from training.calibration import expected_calibration_error, pair_nll, reliability
from training.data import PreferenceGroup

log = logging.getLogger(__name__)

TRAIN_ROWS_FILE = "training_rows.txt"


def score_sequences(
    runner: RewardModelRunner, sequences: Sequence[list[int]], max_tokens: int = 8192
) -> list[float]:
    """Score token id lists in length-sorted, token-budgeted batches; results in input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    rewards = [0.0] * len(sequences)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(sequences[order[end]]) <= max_tokens:
            end += 1
        batch = order[start:end]
        for i, reward in zip(batch, runner.forward([sequences[i] for i in batch]), strict=True):
            rewards[i] = reward
        start = end
    return rewards


@dataclass
class PairScores:
    """Rewards and response lengths of every evaluated pair, chosen first."""

    chosen: np.ndarray
    rejected: np.ndarray
    chosen_tokens: np.ndarray
    rejected_tokens: np.ndarray

    @property
    def margins(self) -> np.ndarray:
        """r_chosen - r_rejected per pair."""
        return self.chosen - self.rejected


def score_pairs(
    runner: RewardModelRunner, formatter: InputFormatter, groups: Sequence[PreferenceGroup]
) -> PairScores:
    """Score every pair of every group; lengths are response tokens without special tokens."""
    sequences: list[list[int]] = []
    offsets: list[int] = []
    for group in groups:
        offsets.append(len(sequences))
        sequences.extend(e.input_ids for e in formatter.encode(group.inputs()))
    rewards = score_sequences(runner, sequences)
    lengths: dict[str, int] = {}
    texts = sorted({r for g in groups for r in g.responses})
    if texts:
        ids = formatter.tokenizer(texts, add_special_tokens=False)["input_ids"]
        lengths = {t: len(x) for t, x in zip(texts, ids, strict=True)}
    rows = [
        (rewards[off + w], rewards[off + lo], lengths[g.responses[w]], lengths[g.responses[lo]])
        for g, off in zip(groups, offsets, strict=True)
        for w, lo, _ in g.pairs
    ]
    columns = np.array(rows, dtype=np.float64).reshape(-1, 4).T
    return PairScores(columns[0], columns[1], columns[2], columns[3])


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


def write_plots(scores: PairScores, temperature: float, out: Path) -> list[str]:
    """Reward histograms, reliability diagram and reward-vs-length scatter as PNGs; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(
        min(scores.chosen.min(), scores.rejected.min()), max(scores.chosen.max(), scores.rejected.max()), 40
    )
    ax.hist(scores.chosen, bins=bins, alpha=0.6, label="chosen")
    ax.hist(scores.rejected, bins=bins, alpha=0.6, label="rejected")
    ax.set(xlabel="reward", ylabel="responses", title="Rewards of chosen and rejected responses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reward_histogram.png", dpi=100)
    plt.close(fig)
    names.append("reward_histogram.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1.0], [0.5, 1.0], "k--", label="perfect calibration")
    for t, label in ((1.0, "T = 1"), (temperature, f"calibrated T = {temperature:.2f}")):
        table = reliability(scores.margins, t)
        points = [
            (c, a)
            for c, a, n in zip(table["confidence"], table["accuracy"], table["count"], strict=True)
            if n
        ]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=label)
    ax.set(
        xlabel="confidence", ylabel="accuracy", title="Reliability diagram", xlim=(0.5, 1.0), ylim=(0.0, 1.0)
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)
    names.append("reliability.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(scores.chosen_tokens, scores.chosen, s=6, alpha=0.5, label="chosen")
    ax.scatter(scores.rejected_tokens, scores.rejected, s=6, alpha=0.5, label="rejected")
    ax.set(xlabel="response tokens", ylabel="reward", title="Reward against response length", xscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reward_vs_length.png", dpi=100)
    plt.close(fig)
    names.append("reward_vs_length.png")
    return names


def write_report(metrics: dict[str, Any], plots: list[str], out: Path, *, title: str) -> None:
    """A short Markdown report that shows the numbers and the plots."""
    bias = metrics["length_bias"]
    low, high = metrics["accuracy_ci95"]
    warnings = [line for w in metrics.get("warnings", []) for line in (f"> **Warning:** {w}", "")]
    lines = [
        f"# {title}",
        "",
        *warnings,
        "| metric | value |",
        "|---|---|",
        f"| pairs | {metrics['pairs']} |",
        f"| pairwise accuracy | {metrics['accuracy']:.3f} (95% CI {low:.3f}–{high:.3f}) |",
        f"| mean margin | {metrics['mean_margin']:.3f} |",
        f"| NLL (T = 1 / calibrated) | {metrics['nll']:.4f} / {metrics['nll_calibrated']:.4f} |",
        f"| ECE, 10 bins (T = 1 / calibrated) | {metrics['ece']:.4f} / {metrics['ece_calibrated']:.4f} |",
        f"| temperature | {metrics['temperature']:.3f} |",
        f"| chosen response is the longer one | {bias['chosen_is_longer']:.3f} |",
        f"| model prefers the longer one | {bias['model_prefers_longer']:.3f} |",
        f"| Spearman(reward, length) | {bias['spearman_reward_vs_length']:.3f} |",
        f"| length-only baseline accuracy | {bias['length_only_baseline_accuracy']:.3f} |",
        "",
        "## Accuracy by response length",
        "",
        "| mean response tokens | pairs | accuracy |",
        "|---|---|---|",
        *(
            f"| {b['tokens_from']:.0f}–{b['tokens_to']:.0f} | {b['pairs']} | {b['accuracy']:.3f} |"
            for b in metrics["accuracy_by_length"]
        ),
        "",
        *(f"![{p}]({p})" for p in plots),
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def score_checkpoint(
    checkpoint: Path, groups: Sequence[PreferenceGroup], device: str = "auto"
) -> tuple[PairScores, float]:
    """Pair scores and calibration temperature of a checkpoint or an ensemble directory.

    An ensemble is scored as `reward-serve` scores it: each member with its own formatter, each
    standardized with its own statistics, then combined with the manifest's aggregation; the
    temperature is the members' mean T / std, as in `/compare`.
    """
    if not is_ensemble(checkpoint):
        metadata = load_metadata(checkpoint)
        runner = RewardModelRunner(checkpoint, device=device, dtype="float32", metadata=metadata)
        formatter = InputFormatter(
            runner.tokenizer, input_format=metadata.input_format.type, max_length=metadata.max_length
        )
        return score_pairs(runner, formatter, groups), metadata.calibration.temperature
    manifest = load_manifest(checkpoint)
    members, temperatures = [], []
    for member in manifest.members:
        scores, temperature = score_checkpoint(checkpoint / member.path, groups, device)
        stats = load_metadata(checkpoint / member.path).normalization
        members.append(((scores.chosen - stats.mean) / stats.std, (scores.rejected - stats.mean) / stats.std))
        temperatures.append(temperature / stats.std)
    weights = [m.weight for m in manifest.members]

    def combine(columns: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(columns, axis=1)
        method, coef = manifest.aggregation, manifest.uncertainty_coef
        return np.array([aggregate(list(row), method, weights=weights, coef=coef) for row in stacked])

    if manifest.calibration is not None:
        temperatures = [manifest.calibration.temperature]
    combined = PairScores(
        combine([c for c, _ in members]),
        combine([r for _, r in members]),
        scores.chosen_tokens,
        scores.rejected_tokens,
    )
    return combined, float(np.mean(temperatures))


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
    device: str = "auto",
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
    scores, own_temperature = score_checkpoint(checkpoint, groups, device)
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
    """Compute the metrics and write metrics.json, the plots and report.md into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(scores, temperature, seed=seed)
    metrics["warnings"] = list(warnings)
    plots = write_plots(scores, temperature, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(metrics, plots, out, title=title)
    return metrics
