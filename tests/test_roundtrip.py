"""Round trips through the real command lines: reward-train, then reward-serve and reward-eval."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from app.metrics import Metrics
from app.service import RewardService
from app.settings import Settings
from reward_model.checkpoint import read_layout
from tests.helpers import REPO, start_server, stop_server
from training.data import LoadStats, encode_groups, load_preferences
from training.loss import PreferenceCollator
from training.trainer import RewardModelForTraining

pytestmark = pytest.mark.slow

BUNDLED = REPO / "data" / "hh-rlhf-harmless-base-sample.jsonl.gz"


@pytest.fixture(scope="module")
def hh_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first 48 bundled pairs for training and the next 16 for evaluation."""
    root = tmp_path_factory.mktemp("hh")
    with gzip.open(BUNDLED, "rt") as fh:
        lines = [line for line in islice(fh, 70) if '"chosen": "\\n\\nHuman' in line]
    (root / "train.jsonl").write_text("".join(lines[:48]))
    (root / "eval.jsonl").write_text("".join(lines[48:64]))
    return root / "train.jsonl", root / "eval.jsonl"


def reward_train(*args: str) -> None:
    command = [sys.executable, "-m", "training", "--report_to", "none", "--device", "cpu", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(llama_dir: Path, hh_small: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, evaluation = hh_small
    out = tmp_path_factory.mktemp("trained") / "rm"
    reward_train(
        "--model",
        str(llama_dir),
        "--data",
        str(train),
        "--eval_data",
        str(evaluation),
        "--output",
        str(out),
        "--max_steps",
        "3",
        "--batch_size",
        "4",
        "--max_length",
        "96",
        "--learning_rate",
        "1e-3",
    )
    return out


def test_served_rewards_equal_the_trainers_own_forward_pass(trained: Path, hh_small, tmp_path: Path):
    groups, stats = load_preferences([hh_small[1]])
    service = RewardService(Settings(model=str(trained)), Metrics())
    service.load(trained)
    formatter = service.members[0].formatter
    encoded = encode_groups(groups, formatter, stats, skip_invalid=False)
    batch = PreferenceCollator(service.members[0].runner.pad_id)(encoded)
    model = RewardModelForTraining(AutoModelForSequenceClassification.from_pretrained(trained)).eval()
    with torch.no_grad():
        trainer_rewards = model(batch["input_ids"], batch["attention_mask"]).tolist()
    items = [
        {"prompt": [{"role": r, "content": c} for r, c in g.prompt], "response": resp}
        for g in groups
        for resp in g.responses
    ]
    server = start_server(trained, tmp_path)
    try:
        with server.client() as client:
            served = client.post("/score", json={"items": items}).json()
            info = client.get("/info").json()
    finally:
        stop_server(server)
    assert served["rewards"] == pytest.approx(trainer_rewards, abs=1e-4)
    assert info["members"][0]["provenance"]["train_groups"] == 48
    assert info["members"][0]["calibration"]["temperature"] > 0


def test_training_and_serving_tokenize_an_item_identically(trained: Path, hh_small):
    groups, _ = load_preferences([hh_small[0]])
    from transformers import AutoTokenizer

    from reward_model.formatting import InputFormatter

    # The trainer's formatter, built from the backbone's tokenizer and the training options...
    training_formatter = InputFormatter(
        AutoTokenizer.from_pretrained(trained), input_format="auto", max_length=96
    )
    trained_ids = encode_groups(groups, training_formatter, LoadStats(), skip_invalid=False)
    # ...and the service's, built from the checkpoint's reward.json.
    service = RewardService(Settings(model=str(trained)), Metrics())
    service.load(trained)
    served_ids = [[e.input_ids for e in service.members[0].formatter.encode(g.inputs())] for g in groups]
    assert [g.input_ids for g in trained_ids] == served_ids
    assert any(e.truncated for g in groups for e in service.members[0].formatter.encode(g.inputs()))


def reward_eval(model: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from training.cli import eval_main; eval_main()", "--model", str(model)]
    command += ["--data", str(data), "--output", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def assert_eval_equals_serve(model: Path, data: Path, tmp_path: Path) -> None:
    """reward-eval's per-pair probabilities and accuracy equal what reward-serve's /compare returns."""
    result = reward_eval(model, data, tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "pairs.jsonl").read_text().splitlines()]
    accuracy = json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"]
    groups, _ = load_preferences([data])
    server = start_server(model, tmp_path)
    try:
        with server.client() as client:
            served = []
            for row in rows:
                group = groups[row["group"]]
                body = {
                    "prompt": [{"role": r, "content": c} for r, c in group.prompt],
                    "response_a": group.responses[row["chosen"]],
                    "response_b": group.responses[row["rejected"]],
                }
                response = client.post("/compare", json=body)
                assert response.status_code == 200, response.text
                served.append(response.json())
    finally:
        stop_server(server)
    # Batches differ (eval sorts by length, /compare sends two items), so raw rewards agree to the
    # batch-invariance bound, 1e-4; standardized ensemble rewards to that bound over the member std.
    stds = [spec.metadata.normalization.std for spec in read_layout(model).members]
    tolerance = 1e-4 / min(stds) if len(stds) > 1 else 1e-4
    assert len(rows) == len(served) == 16
    assert [r["reward_chosen"] for r in rows] == pytest.approx([s["reward_a"] for s in served], abs=tolerance)
    assert [r["reward_rejected"] for r in rows] == pytest.approx(
        [s["reward_b"] for s in served], abs=tolerance
    )
    assert [r["prob_chosen_better"] for r in rows] == pytest.approx(
        [s["prob_a_better"] for s in served], abs=tolerance
    )
    assert accuracy == sum(s["preferred"] == "a" for s in served) / len(served)


def test_reward_eval_equals_reward_serve_for_a_single_model(trained: Path, hh_small, tmp_path: Path):
    assert_eval_equals_serve(trained, hh_small[1], tmp_path)


def test_reward_eval_writes_a_report_and_refuses_training_rows(trained: Path, hh_small, tmp_path: Path):
    train, evaluation = hh_small
    ok = reward_eval(trained, evaluation, tmp_path / "r")
    assert ok.returncode == 0, ok.stderr[-2000:]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["pairs"] == 16 and 0.0 <= metrics["accuracy"] <= 1.0
    low, high = metrics["accuracy_ci95"]
    assert low <= metrics["accuracy"] <= high
    for key in ("ece", "ece_calibrated", "nll", "mean_margin", "accuracy_by_length", "length_bias"):
        assert key in metrics, key
    for name in (
        "report.md",
        "pairs.jsonl",
        "reward_histogram.png",
        "reliability.png",
        "reward_vs_length.png",
    ):
        assert (tmp_path / "r" / name).stat().st_size > 0, name
    refused = reward_eval(trained, train, tmp_path / "bad")
    assert refused.returncode == 2
    assert "48 of 48 evaluation rows were in the training data; refusing" in refused.stderr
    flagged = reward_eval(trained, train, tmp_path / "f", "--allow-overlap")
    assert flagged.returncode == 0
    assert "were in the training data" in (tmp_path / "f" / "report.md").read_text()


def test_an_ensemble_trained_by_reward_train_is_served(bert_dir: Path, hh_small, tmp_path: Path):
    train, evaluation = hh_small
    out = tmp_path / "ens"
    reward_train(
        "--model",
        str(bert_dir),
        "--data",
        str(train),
        "--eval_data",
        str(evaluation),
        "--output",
        str(out),
        "--max_steps",
        "2",
        "--batch_size",
        "4",
        "--max_length",
        "64",
        "--ensemble",
        "2",
        "--bootstrap",
        "--learning_rate",
        "1e-3",
    )
    manifest = json.loads((out / "ensemble.json").read_text())
    assert [m["path"] for m in manifest["members"]] == ["member-0", "member-1"]
    assert manifest["provenance"]["eval_metrics"]["pairs"] == 16  # the ensemble as served, evaluated
    assert (out / "eval" / "report.md").exists()
    seeds = [
        json.loads((out / m / "reward.json").read_text())["provenance"]["seed"]
        for m in ("member-0", "member-1")
    ]
    assert seeds == [42, 43]
    server = start_server(out, tmp_path)
    try:
        with server.client() as client:
            item = {"prompt": "how do I bake bread?", "response": "mix flour and water"}
            body = client.post("/score", json={"items": [item], "return_member_rewards": True}).json()
            info = client.get("/info").json()
            metrics = client.get("/metrics").text
    finally:
        stop_server(server)
    assert_eval_equals_serve(out, evaluation, tmp_path)
    members = body["member_rewards"]
    assert set(members) == {"member-0", "member-1"}
    values = [members["member-0"][0], members["member-1"][0]]
    assert body["rewards"][0] == pytest.approx(sum(values) / 2, abs=1e-6)
    assert body["stds"][0] == pytest.approx(abs(values[0] - values[1]) / 2, abs=1e-6)
    assert body["normalized"] is True and info["num_members"] == 2
    assert 'reward_inference_duration_seconds_count{member="member-1"}' in metrics
    assert "reward_ensemble_disagreement_count 1.0" in metrics
