"""`python -m bench.dashboard`: the Grafana dashboard's own queries, answered by a real Prometheus that
scrapes real replicas under traffic, drawn into a PNG (there is no Grafana here to take a screenshot of).

Two `reward-serve` replicas of a model sit behind nginx (deploy/nginx.conf) and are scraped by Prometheus
(deploy/prometheus.yml), as in the compose stack. Mixed traffic (score requests of 1 to 32 items,
best-of-8, a few invalid requests) runs through nginx; partway through, one replica gets SIGTERM
(drains, exits) and later starts again, so the readiness panel has something to show. Each panel of
deploy/grafana/dashboards/reward-server.json is then queried over the run and drawn where its gridPos
puts it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import hh_items
from bench.processes import REPO, free_port, start, stop
from bench.stack import DASHBOARD, start_nginx, start_prometheus

STEP_SECONDS = 5


def traffic(url: str, items: list[dict[str, Any]], until: float, seed: int) -> None:
    """One client: mixed requests through the load balancer until the deadline."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < until:
            draw = rng.random()
            if draw < 0.05:
                client.post("/score", json={"items": []})  # a client bug: 422
            elif draw < 0.2:
                prompt = rng.choice(items)["prompt"]
                client.post(
                    "/best-of-n",
                    json={"prompt": prompt, "responses": [i["response"] for i in rng.sample(items, 8)]},
                )
            else:
                client.post("/score", json={"items": rng.sample(items, rng.randint(1, 32))})


def query_range(prometheus: str, expr: str, start_s: float, end_s: float) -> list[dict[str, Any]]:
    """A range query over the run, at the dashboard's step."""
    params = {"query": expr, "start": start_s, "end": end_s, "step": STEP_SECONDS}
    body = httpx.get(f"{prometheus}/api/v1/query_range", params=params, timeout=30).json()
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return list(body["data"]["result"])


def legend(template: str, labels: dict[str, str]) -> str:
    for name, value in labels.items():
        template = template.replace("{{" + name + "}}", value)
    return template.replace("{{endpoint}}", "").replace("{{member}}", "").strip()


def draw(
    panels: list[dict[str, Any]],
    results: dict[int, list[tuple[str, list[dict[str, Any]]]]],
    t0: float,
    out: Path,
) -> None:
    """Lay the panels out as Grafana's gridPos does (24 columns) and draw each kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.style.use("dark_background")
    fig = plt.figure(figsize=(18, rows * 0.42))
    for panel in panels:
        g = panel["gridPos"]
        ax = fig.add_axes(
            (
                g["x"] / 24 + 0.035,
                1 - (g["y"] + g["h"]) / rows + 0.03,
                g["w"] / 24 - 0.05,
                g["h"] / rows - 0.07,
            )
        )
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        series = [(leg, s) for leg, found in results[panel["id"]] for s in found]
        if panel["type"] == "stat":
            text = "   ".join(
                f"{legend(leg, s['metric'])}: {float(s['values'][-1][1]):.3g}" for leg, s in series
            )
            ax.text(0.5, 0.5, text or "no data", ha="center", va="center", fontsize=14)
            ax.axis("off")
            continue
        if panel["type"] == "heatmap":
            by_le = sorted(((float(s["metric"]["le"]), s) for _, s in series), key=lambda pair: pair[0])
            times = sorted({float(v[0]) for _, s in by_le for v in s["values"]})
            grid = np.array(
                [
                    [float(dict((float(t), v) for t, v in s["values"]).get(t, 0)) for t in times]
                    for _, s in by_le
                ]
            )
            counts = np.diff(grid, axis=0, prepend=0).clip(min=0)
            ax.imshow(
                counts,
                aspect="auto",
                origin="lower",
                cmap="Oranges",
                extent=(0, (times[-1] - t0) / 60, 0, len(by_le)),
            )
            ax.set_yticks(np.arange(len(by_le)) + 0.5, [f"≤{le:g}" for le, _ in by_le], fontsize=6)
            ax.set_xlabel("minutes", fontsize=7)
            continue
        if panel["type"] == "state-timeline":
            for row, (_, s) in enumerate(series):
                for t, v in s["values"]:
                    color = "#37872d" if float(v) == 1 else "#c4162a"
                    ax.barh(row, STEP_SECONDS / 60, left=(float(t) - t0) / 60, color=color, height=0.6)
            ax.set_yticks(range(len(series)), [legend(leg, s["metric"]) for leg, s in series], fontsize=7)
            ax.set_xlabel("minutes (green: ready; red: not ready; blank: not scraped)", fontsize=7)
            continue
        for leg, s in series:
            values = [(float(t), float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if values:
                ax.plot(
                    [(t - t0) / 60 for t, _ in values],
                    [v for _, v in values],
                    label=legend(leg, s["metric"]),
                    lw=1,
                )
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left", ncol=2)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_ylabel(unit, fontsize=7)
    fig.suptitle(
        "Reward server dashboard: its queries on a real Prometheus (2 replicas, one restarted)", fontsize=11
    )
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint or ensemble directory (default: the demo)")
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    args = parser.parse_args(argv)
    if args.model is None:
        from training.demo import ensure_demo_model

        args.model = str(ensure_demo_model())
    nginx, prometheus = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("prometheus") or "prometheus"
    items = hh_items(400)
    work = Path(tempfile.mkdtemp(prefix="dashboard-"))
    ports = [free_port(), free_port()]

    def replica(port: int) -> Any:
        command = [
            sys.executable,
            "-m",
            "app",
            "--model",
            args.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        return start(
            [*command, "--log-level", "warning"], f"http://127.0.0.1:{port}", work / f"serve-{port}.log"
        )

    replicas = [replica(port) for port in ports]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    lb_port, prom_port = free_port(), free_port()
    others = [
        start_nginx(nginx, addresses, lb_port, work),
        start_prometheus(prometheus, addresses, prom_port, work),
    ]
    try:
        t0 = time.time()
        until = time.monotonic() + args.seconds
        clients = [
            threading.Thread(target=traffic, args=(f"http://127.0.0.1:{lb_port}", items, until, i))
            for i in range(args.clients)
        ]
        for client in clients:
            client.start()
        time.sleep(args.seconds * 0.45)
        stop(replicas[1])  # drains, exits: readiness turns red, nginx sends everything to the other
        time.sleep(args.seconds * 0.15)
        replicas[1] = replica(ports[1])
        for client in clients:
            client.join()
        time.sleep(2 * STEP_SECONDS)  # the last scrapes
        t1 = time.time()
        panels = json.loads(DASHBOARD.read_text())["panels"]
        results = {}
        for panel in panels:
            results[panel["id"]] = [
                (
                    t.get("legendFormat", ""),
                    query_range(
                        f"http://127.0.0.1:{prom_port}", t["expr"].replace("$__rate_interval", "30s"), t0, t1
                    ),
                )
                for t in panel["targets"]
            ]
        draw(panels, results, t0, args.out)
    finally:
        for process in [*others, *replicas]:
            stop(process)


if __name__ == "__main__":
    main()
