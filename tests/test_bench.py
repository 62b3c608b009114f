"""Smoke test of the benchmark: a few seconds on a tiny model, to keep `make bench` working.

It asserts that every figure is produced and sane, never how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadgen import check_loopback
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_the_benchmark_runs_end_to_end_and_reports_every_ratio(bert_dir: Path, tmp_path: Path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--model",
            str(bert_dir),
            "--quick",
            "--seconds",
            "1",
            "--output",
            str(out),
            "--ensemble-of",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert (out / "throughput.png").stat().st_size > 0
    for name in (
        "saturation_over_offline_limit",
        "service_over_naive_c8_n16",
        "service_over_naive_c64_n1",
        "padding_efficiency_hh",
        "p50_c1_n1_over_direct_forward",
        "ensemble_cost_over_k_times_single",
    ):
        assert results["ratios"][name] > 0, name
    assert 0 < results["padding_efficiency_hh"] <= 1
    # the one-client ratio's baseline: the same items' direct forwards, before and after that load
    before, after = results["direct_single_p50_ms"]
    assert before > 0 and after > 0
    assert results["ratios"]["p50_c1_n1_over_direct_forward"] == results["service"]["c1_n1"]["p50_ms"] / (
        (before + after) / 2
    )
    # the offline limit's baseline: the default variant before the served loads and again after them
    [again] = results["offline_again"].values()
    limit = (
        results["offline_engines"]["transformers-eager-float32"]["items_per_s"] + again["items_per_s"]
    ) / 2
    saturation = max(v["items_per_s"] for v in results["service"].values())
    assert results["ratios"]["saturation_over_offline_limit"] == saturation / limit
    assert results["ratios"]["served_saturation_over_fastest_offline_float32"] == saturation / limit
    assert all(v["errors"] == 0 for v in results["service"].values())
    assert set(results["best_of_n"]) == {"n16"}  # --quick: one size
    assert "Target ratios (same run):" in result.stdout


def test_the_load_generator_refuses_anything_but_loopback():
    check_loopback("http://127.0.0.1:8000/score")
    check_loopback("http://localhost:8000/score")
    with pytest.raises(SystemExit, match=r"refusing non-loopback target '10\.0\.0\.1'"):
        check_loopback("http://10.0.0.1:8000/score")


def test_engine_targets_read_each_dtype_at_its_heaviest_load_against_before_and_after_baselines():
    """The engine issue's ratios from one run's figures: served saturation is the best served load of
    the dtype's variants (64 x 64 included), each offline figure timed twice is the mean of both."""
    from bench.report import engine_ratios

    def served(**items_per_s: float) -> dict:
        return {k: {"items_per_s": v} for k, v in items_per_s.items()}

    results = {
        "default_variant": "transformers-eager-float32",
        "service": served(c1_n1=40.0, c8_n16=90.0, c64_n64=100.0),
        "variants": {"transformers-eager-bfloat16": served(c1_n1=50.0, c8_n16=140.0, c64_n64=160.0)},
        "offline_engines": {
            "transformers-eager-float32": {"items_per_s": 100.0},
            "transformers-eager-bfloat16": {"items_per_s": 160.0},
            "transformers-compiled-bfloat16": {"items_per_s": 150.0},
        },
        "offline_again": {
            "transformers-eager-float32": {"items_per_s": 110.0},
            "transformers-eager-bfloat16": {"items_per_s": 190.0},
        },
    }
    ratios = engine_ratios(results)
    assert ratios["served_saturation_over_fastest_offline_float32"] == 100.0 / 105.0
    assert ratios["served_saturation_over_fastest_offline_bfloat16"] == 160.0 / 175.0
    assert ratios["transformers_eager_bf16_over_float32"] == 175.0 / 105.0
    assert "transformers_compiled_bf16_over_float32" not in ratios  # no compiled float32 figure
