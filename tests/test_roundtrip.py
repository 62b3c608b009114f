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
from tests.conftest import REPO, start_server, stop_server
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

    from app.formatting import InputFormatter

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


def test_reward_eval_writes_a_report_and_refuses_training_rows(trained: Path, hh_small, tmp_path: Path):
    train, evaluation = hh_small
    command = [
        sys.executable,
        "-c",
        "from training.cli import eval_main; eval_main()",
        "--model",
        str(trained),
    ]
    ok = subprocess.run(
        [*command, "--data", str(evaluation), "--output", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["pairs"] == 16 and 0.0 <= metrics["accuracy"] <= 1.0
    low, high = metrics["accuracy_ci95"]
    assert low <= metrics["accuracy"] <= high
    for key in ("ece", "ece_calibrated", "nll", "mean_margin", "accuracy_by_length", "length_bias"):
        assert key in metrics, key
    for name in ("report.md", "reward_histogram.png", "reliability.png", "reward_vs_length.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0, name
    refused = subprocess.run(
        [*command, "--data", str(train), "--output", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert refused.returncode == 2
    assert "48 of 48 evaluation rows were in the training data; refusing" in refused.stderr
    flagged = subprocess.run(
        [*command, "--data", str(train), "--output", str(tmp_path / "f"), "--allow-overlap"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
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
    members = body["member_rewards"]
    assert set(members) == {"member-0", "member-1"}
    values = [members["member-0"][0], members["member-1"][0]]
    assert body["rewards"][0] == pytest.approx(sum(values) / 2, abs=1e-6)
    assert body["stds"][0] == pytest.approx(abs(values[0] - values[1]) / 2, abs=1e-6)
    assert body["normalized"] is True and info["num_members"] == 2
    assert 'reward_inference_duration_seconds_count{member="member-1"}' in metrics
    assert "reward_ensemble_disagreement_count 1.0" in metrics
