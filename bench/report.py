"""The benchmark's table, plot and target ratios, from the figures of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """The target ratios of the benchmark issue, from figures of this one run."""
    service, naive, offline = r["service"], r["naive"], r["offline"]["hh"]
    saturation = max(v["items_per_s"] for k, v in service.items() if not k.startswith("long"))
    single = service.get("c1_n1")
    out = {
        "saturation_over_offline_limit": saturation / offline["items_per_s"],
        "service_over_naive_c8_n16": service["c8_n16"]["items_per_s"] / naive["c8_n16"]["items_per_s"],
        "service_over_naive_c64_n1": service["c64_n1"]["items_per_s"] / naive["c64_n1"]["items_per_s"],
        "padding_efficiency_hh": r["padding_efficiency_hh"],
    }
    if single:
        out["p50_c1_n1_over_direct_forward"] = single["p50_ms"] / offline["single_item_p50_ms"]
    if "ensemble" in r:
        out["ensemble_cost_over_k_times_single"] = r["ensemble"]["cost_ratio_vs_k_times_single"]
    for peer, figures in r.get("peers", {}).items():
        for scenario in ("c8_n16", "c64_n1"):
            if scenario in figures and scenario in service:
                value = service[scenario]["items_per_s"] / figures[scenario]["items_per_s"]
                out[f"service_over_{peer}_{scenario}"] = value
    return out


def print_table(r: dict[str, Any]) -> None:
    """A plain-text table of every scenario and the target ratios."""
    offline = r["offline"]["hh"]
    print(
        f"\nOffline limit (HH items): {offline['items_per_s']:.1f} items/s, "
        f"{offline['tokens_per_s']:.0f} tokens/s "
        f"at batch {offline['best_batch_size']} on {offline['device']} ({offline['dtype']}); "
        f"one item {offline['single_item_p50_ms']:.1f} ms"
    )
    print(
        f"\n{'server':8} {'scenario':22} {'items/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7}"
    )
    for server in ("service", "naive", "best_of_n"):
        for name, v in r.get(server, {}).items():
            print(
                f"{server:8} {name:22} {v['items_per_s']:9.1f} {v['p50_ms']:8.1f} {v['p95_ms']:8.1f} "
                f"{v['p99_ms']:8.1f} {v['errors']:7d}"
            )
    for peer, figures in r.get("peers", {}).items():
        if "error" in figures or not figures["parity"]["ok"]:
            print(f"{peer:8} not timed: {figures.get('error') or figures['parity']}")
        for name, v in figures.items():
            if isinstance(v, dict) and "items_per_s" in v:
                print(
                    f"{peer:8} {name:22} {v['items_per_s']:9.1f} {v['p50_ms']:8.1f} {v['p95_ms']:8.1f} "
                    f"{v['p99_ms']:8.1f} {v['errors']:7d}"
                )
    print("\nTarget ratios (same run):")
    for name, value in r["ratios"].items():
        print(f"  {name:40} {value:.3f}")


def plot(r: dict[str, Any], path: Path) -> None:
    """Bar chart: items/s of the service and the naive server per scenario, against the offline limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["naive"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    series = [("reward-serve", r["service"]), ("naive baseline", r["naive"])]
    series += [(v["label"], v) for v in r.get("peers", {}).values() if v.get("parity", {}).get("ok")]
    width = 0.8 / len(series)
    for k, (label, figures) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        ax.bar(x + offset, [figures.get(n, {}).get("items_per_s", 0) for n in names], width, label=label)
    ax.axhline(r["offline"]["hh"]["items_per_s"], color="k", linestyle="--", label="offline limit")
    ax.set_xticks(x, [n.replace("_", " ") for n in names])
    ax.set(ylabel="items / s", title="Throughput on HH-RLHF items (c = clients, n = items per request)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
