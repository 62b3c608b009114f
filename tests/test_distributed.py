"""Training across processes: torchrun and `accelerate launch` on CPU (gloo), into one servable checkpoint.

Two real worker processes train a tiny model together. Each one journals every write it makes under the
output directory (`tests/write_journal/sitecustomize.py`), so the test can show that rank 1 wrote
nothing there and that every file of the checkpoint was written by rank 0.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, EvalPrediction

from reward_model.loading import LoadOptions, open_reward_model
from tests.helpers import ITEMS, REPO, direct_rewards
from training.loss import group_rows
from training.trainer import pair_metrics

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
JOURNAL_HOOK = Path(__file__).resolve().parent / "write_journal"
LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2"],
    # On a machine without GPUs the workers fall back to the CPU and gloo, as they do under torchrun.
    "accelerate": [
        *(str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
    ],
}


def preference_files(root: Path) -> tuple[Path, Path]:
    """24 training groups and 8 evaluation groups; every third a 3-response ranking (3 pairs)."""
    rows = []
    for i in range(32):
        if i % 3 == 0:
            rows.append(
                {
                    "prompt": f"question {i}",
                    "responses": [f"a kind answer {i}", "maybe", "no"],
                    "ranking": [0, 1, 2],
                }
            )
        else:
            rows.append({"prompt": f"question {i}", "chosen": f"a helpful answer {i}", "rejected": f"no {i}"})
    lines = [json.dumps(row) for row in rows]
    (root / "train.jsonl").write_text("\n".join(lines[:24]) + "\n")
    (root / "eval.jsonl").write_text("\n".join(lines[24:]) + "\n")
    return root / "train.jsonl", root / "eval.jsonl"


def launch(launcher: str, model: Path, output: Path, tmp_path: Path) -> dict[str, list[dict[str, str]]]:
    """Train with 2 worker processes; returns each rank's journal of writes under `output`."""
    train, evaluation = preference_files(tmp_path)
    journals = tmp_path / "journals"
    journals.mkdir()
    args = ["--model", str(model), "--data", str(train), "--eval_data", str(evaluation)]
    args += ["--output", str(output), "--batch_size", "4", "--eval_batch_size", "3", "--max_length", "48"]
    args += ["--learning_rate", "1e-3", "--save_steps", "-1", "--report_to", "none", "--device", "cpu"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(JOURNAL_HOOK), str(REPO), os.environ.get("PYTHONPATH")) if p
        ),
        "JOURNAL_ROOT": str(output),
        "JOURNAL_DIR": str(journals),
    }
    command = [*LAUNCHERS[launcher], "-m", "training", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert result.stdout.count("reward-train: wrote") == 1, result.stdout  # rank 0 only
    return {
        path.stem.removeprefix("rank-"): [json.loads(line) for line in path.read_text().splitlines()]
        for path in journals.glob("rank-*.jsonl")
    }


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_train_one_checkpoint_that_rank_0_alone_writes(
    launcher: str, bert_dir: Path, tmp_path: Path
):
    output = tmp_path / "rm"
    journals = launch(launcher, bert_dir, output, tmp_path)

    # Both workers ran, as ranks 0 and 1 of a world of 2.
    assert sorted(journals) == ["0", "1"]
    for rank, entries in journals.items():
        assert entries[0] == {"event": "start", "rank": rank, "world_size": "2"}
    # Rank 1 trained but wrote nothing under the output directory: no file, no directory, no rename.
    assert journals["1"][1:] == []
    # Every file of the checkpoint was written by rank 0, once: the journal saw all of them (so no
    # write escaped it), and none twice but reward.json, which is first written without calibration
    # so that the serving loader can open the checkpoint to fit it.
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    writes = Counter(e["path"] for e in journals["0"][1:] if e["event"] in ("open", "native.write"))
    assert writes == {name: 2 if name == "reward.json" else 1 for name in files}
    assert {"model.safetensors", "tokenizer.json", "reward.json", "training_rows.txt"} <= set(files)
    assert "eval/report.md" in files and "eval/metrics.json" in files

    # The Trainer trained as one world of 2: 24 groups at 4 per process per step is 3 steps (6 alone).
    metadata = json.loads((output / "reward.json").read_text())
    provenance = metadata["provenance"]
    assert provenance["world_size"] == 2 and provenance["optimizer_steps"] == 3
    assert provenance["eval_metrics"]["pairs"] == 14  # 8 groups, 3 of them rankings of 3 pairs
    assert metadata["calibration"]["temperature"] > 0 and metadata["normalization"]["std"] > 0

    # The checkpoint serves as it is: the loader's rewards are a plain transformers forward pass's.
    model = open_reward_model(output, LoadOptions(device="cpu"))
    [member] = model.members
    [served] = model.score(ITEMS)
    expected = direct_rewards(output, [e.input_ids for e in member.encode(ITEMS)])
    assert all(math.isfinite(r) for r in served)
    assert served == pytest.approx(expected, abs=1e-4)
    before = AutoModelForSequenceClassification.from_pretrained(bert_dir).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(output).state_dict()
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_evaluation_rows_are_groups_so_processes_gather_alike():
    # Group 0 is a pair, group 1 a ranking of three: two rows, padded to three columns.
    margins = torch.tensor([0.5, 1.0, -2.0, 3.0])
    table, real = group_rows(margins, torch.tensor([0, 1, 1, 1]))
    assert table.tolist() == [[0.5, 0.0, 0.0], [1.0, -2.0, 3.0]]
    assert real.tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    # What the Trainer hands to the metrics: those rows, and a narrower batch's padded with -100.
    predictions = np.array([*table.tolist(), [-1.0, -100.0, -100.0]])
    labels = np.array([*real.tolist(), [1.0, -100.0, -100.0]])
    metrics = pair_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
    assert metrics == {"accuracy": 0.6, "margin": pytest.approx(1.5 / 5)}
