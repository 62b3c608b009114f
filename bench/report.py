"""The benchmark's table, plot and target ratios, from the figures of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def offline_items_per_s(r: dict[str, Any], name: str) -> float | None:
    """A variant's offline items/s: the mean of its run before the served loads and, for the fastest
    variant of each dtype, its run again after them (these machines drift by ±15% in minutes)."""
    runs = (r.get("offline_engines", {}).get(name, {}), r.get("offline_again", {}).get(name, {}))
    values = [run["items_per_s"] for run in runs if "items_per_s" in run]
    return sum(values) / len(values) if values else None


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """The target ratios of the benchmark issue, from figures of this one run."""
    service, naive, offline = r["service"], r["naive"], r["offline"]["hh"]
    saturation = max(v["items_per_s"] for k, v in service.items() if not k.startswith("long"))
    single = service.get("c1_n1")
    limit = offline_items_per_s(r, r.get("default_variant", "transformers-eager-float32"))
    out = {
        "saturation_over_offline_limit": saturation / (limit or offline["items_per_s"]),
        "service_over_naive_c8_n16": service["c8_n16"]["items_per_s"] / naive["c8_n16"]["items_per_s"],
        "service_over_naive_c64_n1": service["c64_n1"]["items_per_s"] / naive["c64_n1"]["items_per_s"],
        "padding_efficiency_hh": r["padding_efficiency_hh"],
    }
    if single:
        # the same items' direct forwards, timed right before and after the one-client load
        direct = r.get("direct_single_p50_ms") or [offline["single_item_p50_ms"]]
        out["p50_c1_n1_over_direct_forward"] = single["p50_ms"] / (sum(direct) / len(direct))
    if "ensemble" in r:
        out["ensemble_cost_over_k_times_single"] = r["ensemble"]["cost_ratio_vs_k_times_single"]
    for peer, figures in r.get("peers", {}).items():
        for scenario in ("c8_n16", "c64_n1"):
            if scenario in figures and scenario in service:
                value = service[scenario]["items_per_s"] / figures[scenario]["items_per_s"]
                out[f"service_over_{peer}_{scenario}"] = value
    out.update(engine_ratios(r))
    return out


def engine_ratios(r: dict[str, Any]) -> dict[str, float]:
    """The engine issue's targets: best served engine against the vLLM server, against the fastest
    offline engine of the same dtype, and bf16 against float32 in the transformers engine."""
    engines = r.get("offline_engines", {})
    out: dict[str, float] = {}
    served = {r.get("default_variant", "transformers-eager-float32"): r["service"], **r.get("variants", {})}
    for dtype in ("float32", "bfloat16"):
        limits = {k: v for k in engines if k.endswith(dtype) and (v := offline_items_per_s(r, k))}
        ours = {k: v for k, v in served.items() if k.endswith(dtype)}
        if not limits or not ours:
            continue
        saturation = max(s["items_per_s"] for v in ours.values() for k, s in v.items() if k.startswith("c"))
        out[f"served_saturation_over_fastest_offline_{dtype}"] = saturation / max(limits.values())
        peer = r.get("peers", {}).get("vllm", {})
        if dtype == r.get("peer_dtype", "float32"):
            for scenario in ("c64_n1", "c8_n16"):
                if scenario in peer:
                    best = max(v[scenario]["items_per_s"] for v in ours.values() if scenario in v)
                    out[f"best_engine_over_vllm_server_{scenario}_{dtype}"] = (
                        best / peer[scenario]["items_per_s"]
                    )
    for mode in ("eager", "compiled"):
        # each dtype's figure as saturation's baseline: the mean of before and after where timed twice
        fp32 = offline_items_per_s(r, f"transformers-{mode}-float32")
        bf16 = offline_items_per_s(r, f"transformers-{mode}-bfloat16")
        if fp32 and bf16:
            out[f"transformers_{mode}_bf16_over_float32"] = bf16 / fp32
    eager, compiled = (
        engines.get("transformers-eager-float32", {}),
        engines.get("transformers-compiled-float32", {}),
    )
    if "items_per_s" in eager and "items_per_s" in compiled:
        out["transformers_compiled_over_eager_float32"] = compiled["items_per_s"] / eager["items_per_s"]
    return out


def print_table(r: dict[str, Any]) -> None:
    """A plain-text table of every scenario and the target ratios."""
    cpu = r.get("cpu", {})
    print(f"\nCPU: {cpu.get('model')} ({cpu.get('machine')}), native bf16: {cpu.get('native_bf16')}")
    for name, v in r.get("offline_engines", {}).items():
        if "items_per_s" in v:
            print(
                f"offline {name:32} {v['items_per_s']:7.1f} items/s at batch {v['best_batch_size']:2}, "
                f"one item {v['single_item_p50_ms']:.1f} ms, load {v['load_seconds']:.0f} s, "
                f"warm-up {v['warmup_seconds']:.0f} s"
            )
        else:
            print(f"offline {name:32} {v.get('skipped')}")
    for name, v in r.get("offline_again", {}).items():
        print(f"offline {name:32} {v.get('items_per_s', 0):7.1f} items/s again, after the served loads")
    for name, scenarios in r.get("variants", {}).items():
        for scenario, v in scenarios.items():
            print(f"served  {name:32} {scenario:8} {v['items_per_s']:7.1f} items/s, p50 {v['p50_ms']:.1f} ms")
    offline = r["offline"]["hh"]
    print(
        f"\nOffline limit (HH items): {offline['items_per_s']:.1f} items/s, "
        f"{offline['tokens_per_s']:.0f} tokens/s "
        f"at batch {offline['best_batch_size']} on {offline['device']} ({offline['dtype']}); "
        f"one item {offline['single_item_p50_ms']:.1f} ms"
    )
    if "direct_single_p50_ms" in r:
        before, after = r["direct_single_p50_ms"]
        print(f"One-client items, forward alone: p50 {before:.1f} ms before that load, {after:.1f} after")
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
