"""`python -m bench` (`make bench`): the service against the model's offline limit and a naive server.

Everything runs in one process tree on this machine, in one run, so every figure is a ratio against
a baseline measured minutes apart on the same hardware. Prints a table; writes results.json and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import engines
from bench.loadgen import load
from bench.offline import offline_limit
from bench.peer_runs import run_peers
from bench.processes import free_port, start, stop
from bench.report import plot, print_table, ratios

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "data" / "hh-rlhf-harmless-base-sample.jsonl.gz"


def hh_items(limit: int) -> list[dict[str, Any]]:
    """(prompt messages, response) items from the bundled data, split as in training."""
    from training.data import load_preferences

    groups, _ = load_preferences([BUNDLED], skip_invalid=True)
    items = []
    for group in groups:
        prompt = [{"role": r, "content": c} for r, c in group.prompt]
        items.extend({"prompt": prompt, "response": response} for response in group.responses)
    return items[:limit]


def long_prompt_items(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """A ~400-token prompt with responses of 20 to 120 tokens (words of the bundled vocabulary)."""
    rng = np.random.default_rng(seed)
    words = " ".join(i["response"] for i in hh_items(400)).split()
    prompt = " ".join(rng.choice(words, size=330))
    return [
        {"prompt": prompt, "response": " ".join(rng.choice(words, size=int(rng.integers(16, 100))))}
        for _ in range(count)
    ]


def requests_of(items: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Cut the items into request bodies of `size` items each."""
    return [{"items": items[i : i + size]} for i in range(0, len(items) - size + 1, size)]


def padding_efficiency(metrics_text: str) -> tuple[float, float]:
    """(real tokens, padded tokens) summed over members from the service's own counters."""
    real = sum(
        float(v) for v in re.findall(r"^reward_batch_real_tokens_total\{[^}]*\} (\S+)$", metrics_text, re.M)
    )
    padded = sum(
        float(v) for v in re.findall(r"^reward_batch_padded_tokens_total\{[^}]*\} (\S+)$", metrics_text, re.M)
    )
    return real, padded


def main(argv: list[str] | None = None) -> None:
    """Run every scenario and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--model", default=None, help="Checkpoint or ensemble (default: the demo model).")
    parser.add_argument("--seconds", type=float, default=8.0, help="Seconds per load scenario.")
    parser.add_argument("--output", default="bench-results", help="Where results.json and the plot go.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: few scenarios, short.")
    parser.add_argument(
        "--ensemble-of",
        type=int,
        default=0,
        help="Also measure a K-member ensemble of --model against K x single (issue: ensembles).",
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="Extra reward-serve flag (repeatable)."
    )
    parser.add_argument(
        "--peers",
        default=None,
        help="Real peer servers to compare against: comma-separated names (vllm, infinity), 'all' or "
        "'none'. Default: every peer installed by bench/install_peers.sh, none with --quick.",
    )
    parser.add_argument("--peer-dtype", default="float32", help="dtype of the peers (match --serve-arg).")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.model is None:
        from training.demo import ensure_demo_model

        args.model = str(ensure_demo_model())
    from reward_model.checkpoint import is_ensemble, load_manifest

    if is_ensemble(args.model):
        # The offline limit and the naive server are single-model ideas: measure one member, and the
        # ensemble's own cost as a ratio (--ensemble-of, default: the ensemble's size).
        manifest = load_manifest(args.model)
        args.ensemble_of = args.ensemble_of or len(manifest.members)
        args.model = str(Path(args.model) / manifest.members[0].path)
        print(f"ensemble given: benchmarking its first member {args.model}", flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    seconds = min(args.seconds, 2.0) if args.quick else args.seconds
    hh = hh_items(64 * 16)
    # Only items that our formatter keeps whole: peers truncate differently (vLLM refuses, infinity cuts
    # the end), so every server gets these same items, as the same texts.
    from bench.peers import render_texts

    hh_texts, fits = render_texts(args.model, hh)
    hh = [item for item, fit in zip(hh, fits, strict=True) if fit]
    hh_texts = [text for text, fit in zip(hh_texts, fits, strict=True) if fit]
    long_items = long_prompt_items(256)
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": args.model,
    }

    results["cpu"] = engines.cpu_facts()
    items_path = work / "items.json"
    items_path.write_text(json.dumps(hh))
    names = [engines.DEFAULT_VARIANT] if args.quick else list(engines.VARIANTS)
    results["offline_engines"] = {}
    for name in names:
        print(f"offline: {name} ...", flush=True)
        results["offline_engines"][name] = engines.offline(name, args.model, items_path, seconds)
    results["offline"] = {"hh": results["offline_engines"][engines.DEFAULT_VARIANT]}
    if not args.quick:
        results["offline"]["long_prompt"] = offline_limit(args.model, long_items, seconds)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [
        sys.executable,
        "-m",
        "app",
        "--model",
        args.model,
        "--port",
        str(port),
        "--log-level",
        "warning",
        *engines.serve_flags(engines.DEFAULT_VARIANT),
        *args.serve_arg,
    ]
    service = start(serve, url, work / "serve.log")
    scenarios = (
        [(1, 1), (8, 16), (64, 1), (64, 16)]
        if args.quick
        else [(c, n) for c in (1, 8, 64) for n in (1, 16, 64)]
    )
    try:
        before = padding_efficiency(httpx.get(f"{url}/metrics").text)
        results["service"] = {}
        for concurrency, size in scenarios:
            print(f"service: concurrency {concurrency}, {size} items/request ...", flush=True)
            one_client = (concurrency, size) == (1, 1)
            if one_client:  # its baseline right before and after it: these machines drift by minutes
                direct = [engines.direct_singles(args.model, items_path)]
            results["service"][f"c{concurrency}_n{size}"] = load(
                f"{url}/score", requests_of(hh, size), concurrency, seconds, work
            )
            if one_client:
                direct.append(engines.direct_singles(args.model, items_path))
                results["direct_single_p50_ms"] = direct
        after = padding_efficiency(httpx.get(f"{url}/metrics").text)
        real, padded = after[0] - before[0], after[1] - before[1]
        results["padding_efficiency_hh"] = real / padded if padded else float("nan")
        if not args.quick:
            results["service"]["long_prompt_c64_n16"] = load(
                f"{url}/score", requests_of(long_items, 16), 64, seconds, work
            )
        results["best_of_n"] = {}
        for n in (16,) if args.quick else (4, 16, 64):
            prompt = hh[0]["prompt"]
            bodies = [
                {"prompt": prompt, "responses": [i["response"] for i in hh[k : k + n]]}
                for k in range(0, len(hh) - n, n)
            ]
            results["best_of_n"][f"n{n}"] = load(f"{url}/best-of-n", bodies, 1, seconds, work)
    finally:
        stop(service)

    port = free_port()
    naive_url = f"http://127.0.0.1:{port}"
    naive = start(
        [sys.executable, "-m", "bench.naive_server", args.model, str(port)], naive_url, work / "naive.log"
    )
    try:
        results["naive"] = {}
        for concurrency, size in [(8, 16), (64, 1)] if args.quick else [(8, 16), (64, 1), (1, 1), (64, 16)]:
            print(f"naive baseline: concurrency {concurrency}, {size} items/request ...", flush=True)
            results["naive"][f"c{concurrency}_n{size}"] = load(
                f"{naive_url}/score", requests_of(hh, size), concurrency, seconds, work
            )
    finally:
        stop(naive)

    if not args.quick:
        results["variants"] = serve_variants(args.model, hh, seconds, work)
    results["offline_again"] = engines.fastest_again(
        results["offline_engines"], args.model, items_path, seconds
    )

    names = None if args.peers in (None, "all") else [] if args.peers == "none" else args.peers.split(",")
    if not (args.quick and args.peers is None):
        results["peers"] = run_peers(args.model, hh, hh_texts, names, args.peer_dtype, seconds, work)

    if args.ensemble_of > 1:
        results["ensemble"] = ensemble_cost(args.model, args.ensemble_of, hh, seconds, work)

    results["peer_dtype"] = args.peer_dtype
    results["default_variant"] = engines.DEFAULT_VARIANT
    results["ratios"] = ratios(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "throughput.png")
    print_table(results)
    print(f"\nwrote {out / 'results.json'} and {out / 'throughput.png'}")


def serve_variants(model: str, items: list[dict[str, Any]], seconds: float, work: Path) -> dict[str, Any]:
    """Our other served engines and dtypes under the headline load patterns, and under the heaviest
    one (64 clients x 64 items), where served saturation is read, as for the default variant."""
    out: dict[str, Any] = {}
    for name in engines.VARIANTS:
        engine, _ = engines.VARIANTS[name]
        python = engines.python_for(engine)
        if name in (engines.DEFAULT_VARIANT, "transformers-compiled-bfloat16") or python is None:
            continue
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(python), "-m", "app", "--model", model, "--port", str(port), "--log-level", "warning"]
        print(f"reward-serve {name}: starting ...", flush=True)
        process = start([*command, *engines.serve_flags(name)], url, work / f"serve-{name}.log")
        try:
            out[name] = {}
            for concurrency, size in [(64, 1), (8, 16), (64, 64), (1, 1)]:
                print(f"reward-serve {name}: concurrency {concurrency}, {size} items/request ...", flush=True)
                bodies = requests_of(items, size)
                out[name][f"c{concurrency}_n{size}"] = load(
                    f"{url}/score", bodies, concurrency, seconds, work
                )
        finally:
            stop(process)
    return out


def ensemble_cost(
    model: str, k: int, items: list[dict[str, Any]], seconds: float, work: Path
) -> dict[str, Any]:
    """Throughput of a K-copy ensemble of the model against the single model, both served, same load."""
    from reward_model.checkpoint import EnsembleManifest, EnsembleMember, save_manifest

    root = work / "ensemble"
    root.mkdir()
    for i in range(k):
        (root / f"m{i}").symlink_to(Path(model).resolve())
    save_manifest(
        root, EnsembleManifest(members=[EnsembleMember(path=f"m{i}", name=f"m{i}") for i in range(k)])
    )
    figures = {}
    for name, path in (("single", model), (f"ensemble_{k}", str(root))):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start(
            [sys.executable, "-m", "app", "--model", path, "--port", str(port), "--log-level", "warning"],
            url,
            work / f"{name}.log",
        )
        try:
            print(f"{name}: concurrency 8, 16 items/request ...", flush=True)
            figures[name] = load(f"{url}/score", requests_of(items, 16), 8, seconds, work)
        finally:
            stop(process)
    single, ensemble = figures["single"]["items_per_s"], figures[f"ensemble_{k}"]["items_per_s"]
    return {**figures, "k": k, "cost_ratio_vs_k_times_single": (single / ensemble) / k}


if __name__ == "__main__":
    main()
