"""The evaluation report's pictures and Markdown: reward histograms, reliability diagram, length plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.calibration import reliability

if TYPE_CHECKING:
    from training.evaluate import PairScores


def write_plots(scores: PairScores, temperature: float, out: Path) -> list[str]:
    """Reward histograms, reliability diagram and reward-vs-length scatter as PNGs; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, ax: Any, name: str) -> str:
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        return name

    fig, ax = plt.subplots(figsize=(6, 4))
    low = min(scores.chosen.min(), scores.rejected.min())
    bins = [float(x) for x in np.linspace(low, max(scores.chosen.max(), scores.rejected.max()), 40)]
    ax.hist(scores.chosen, bins=bins, alpha=0.6, label="chosen")
    ax.hist(scores.rejected, bins=bins, alpha=0.6, label="rejected")
    ax.set(xlabel="reward", ylabel="responses", title="Rewards of chosen and rejected responses")
    names = [save(fig, ax, "reward_histogram.png")]

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
    names.append(save(fig, ax, "reliability.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(scores.chosen_tokens, scores.chosen, s=6, alpha=0.5, label="chosen")
    ax.scatter(scores.rejected_tokens, scores.rejected, s=6, alpha=0.5, label="rejected")
    ax.set(xlabel="response tokens", ylabel="reward", title="Reward against response length", xscale="log")
    names.append(save(fig, ax, "reward_vs_length.png"))
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
