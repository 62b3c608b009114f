"""Training: exact loss values, data formats and errors, calibration, one optimizer step, reports."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reward_model.devices import cpu_has_native_bf16
from reward_model.formatting import InputFormatter
from tests.tiny_models import bert_tokenizer
from training.calibration import expected_calibration_error, fit_temperature
from training.config import RewardTrainingConfig
from training.data import (
    DataError,
    EncodedGroup,
    LoadStats,
    encode_groups,
    load_preferences,
    parse_row,
    split_transcript,
)
from training.loss import PreferenceCollator, preference_loss

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "data" / "hh-rlhf-harmless-base-sample.jsonl.gz"


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# -- loss -----------------------------------------------------------------------------------------------


def test_bradley_terry_loss_matches_hand_computed_values():
    rewards = torch.tensor([1.0, 0.0, 2.0, -1.0])
    out = preference_loss(
        rewards,
        torch.tensor([0, 2]),
        torch.tensor([1, 3]),
        torch.tensor([0.0, 0.5]),
        torch.tensor([0.5, 0.5]),
    )
    expected = (softplus(-1.0) + softplus(-(3.0 - 0.5))) / 2
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.margins.tolist() == [1.0, 3.0]


def test_reward_centering_adds_coef_times_mean_square_of_pair_sums():
    rewards = torch.tensor([1.0, 0.0, 2.0, -1.0])
    args = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.zeros(2), torch.tensor([0.5, 0.5]))
    plain = preference_loss(rewards, *args).loss.item()
    centered = preference_loss(rewards, *args, center_coef=0.1).loss.item()
    assert centered - plain == pytest.approx(0.1 * ((1.0 + 0.0) ** 2 + (2.0 - 1.0) ** 2) / 2, abs=1e-6)


def test_rankings_expand_into_all_pairs_and_every_group_weighs_the_same():
    ranking = parse_row({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]}, "f:1")
    assert ranking.pairs == ((2, 0, 0.0), (2, 1, 0.0), (0, 1, 0.0))
    scored = parse_row({"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.1, 0.5, 0.3]}, "f:2")
    assert scored.pairs == ((1, 0, 0.0), (2, 0, 0.0), (1, 2, 0.0))
    groups = [
        EncodedGroup([[5, 1], [6, 1], [7]], ranking.pairs, "f:1"),
        EncodedGroup([[8], [9, 9, 9]], ((0, 1, 0.25),), "f:3"),
    ]
    batch = PreferenceCollator(pad_id=0)(groups)
    assert batch["winners"].tolist() == [2, 2, 0, 3]
    assert batch["losers"].tolist() == [0, 1, 1, 4]
    assert batch["margins"].tolist() == [0.0, 0.0, 0.0, 0.25]
    assert batch["pair_weights"].tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert batch["input_ids"].tolist() == [[5, 1, 0], [6, 1, 0], [7, 0, 0], [8, 0, 0], [9, 9, 9]]
    rewards = torch.tensor([0.3, -0.2, 1.0, 0.7, 0.1])
    loss = preference_loss(
        rewards, batch["winners"], batch["losers"], batch["margins"], batch["pair_weights"]
    )
    kwise = (softplus(-(1.0 - 0.3)) + softplus(-(1.0 + 0.2)) + softplus(-(0.3 + 0.2))) / 3
    assert loss.loss.item() == pytest.approx((kwise + softplus(-(0.7 - 0.1 - 0.25))) / 2, abs=1e-6)


# -- data -----------------------------------------------------------------------------------------------


def test_hh_transcripts_split_where_they_stop_sharing_text():
    prompt = "\n\nHuman: how do I rob a house?\n\nAssistant:"
    chosen = prompt + " Human: I think that is a bad idea.\n\nAssistant: Really."
    rejected = prompt + " Try at night."
    shared, c, r = split_transcript(chosen, rejected)
    assert shared == prompt
    assert (c, r) == ("Human: I think that is a bad idea.\n\nAssistant: Really.", "Try at night.")
    group = parse_row({"chosen": chosen, "rejected": rejected}, "f:1")
    assert group.prompt == (("user", "how do I rob a house?"),)


def test_multi_turn_transcripts_become_messages():
    t = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bake bread?\n\nAssistant:"
    group = parse_row({"chosen": t + " Knead it.", "rejected": t + " No."}, "f:1")
    assert group.prompt == (("user", "hi"), ("assistant", "hello"), ("user", "bake bread?"))
    assert group.responses == ("Knead it.", "No.")


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "q", "chosen": "good", "rejected": "bad", "margin": 1.5},
        {
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "margin": 1.5,
        },
        {
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
            "margin": 1.5,
        },
    ],
    ids=["strings", "messages-with-prompt", "messages-without-prompt"],
)
def test_pair_formats_parse_to_the_same_group(row):
    group = parse_row(row, "f:1")
    assert group.prompt == (("user", "q"),)
    assert group.responses == ("good", "bad") and group.pairs == ((0, 1, 1.5),)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "q", "chosen": "a"}, "f.jsonl:3: missing field(s): rejected"),
        (
            {"prompt": "q", "chosen": "same", "rejected": "same"},
            "f.jsonl:3: chosen and rejected are identical",
        ),
        ({"prompt": "q", "chosen": " ", "rejected": "x"}, "f.jsonl:3: empty text"),
        (
            {"prompt": "q", "responses": ["a", "b"], "ranking": [0, 0]},
            "f.jsonl:3: ranking must be a permutation of the response indices, best first",
        ),
        ({"chosen": "no transcript", "rejected": "here"}, "f.jsonl:3: the transcripts share no"),
        ([1, 2], "f.jsonl:3: a row must be a JSON object"),
    ],
)
def test_bad_rows_name_their_file_and_line(row, message):
    with pytest.raises(DataError) as info:
        parse_row(row, "f.jsonl:3")
    assert str(info.value).startswith(message)


def test_a_bad_row_stops_loading_unless_skipping_counts_it(tmp_path: Path):
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "x", "rejected": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=rf"^{path}:2: chosen and rejected are identical$"):
        load_preferences([path])
    groups, stats = load_preferences([path], skip_invalid=True)
    assert len(groups) == 1 and stats.skipped == {"chosen and rejected are identical": 1} and stats.rows == 2


def test_json_parquet_and_gzip_files_load(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "r", "chosen": "c", "rejected": "d"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    (tmp_path / "d.parquet.gz").write_bytes(gzip.compress((tmp_path / "c.parquet").read_bytes()))
    for name in ("a.json", "b.jsonl.gz", "c.parquet", "d.parquet.gz"):
        groups, stats = load_preferences([tmp_path / name])
        assert [g.responses for g in groups] == [("a", "b"), ("c", "d")], name
        assert len(stats.files[str(tmp_path / name)]["sha256"]) == 64


def test_the_bundled_data_loads_with_its_four_empty_responses_counted():
    groups, stats = load_preferences([BUNDLED], skip_invalid=True)
    assert stats.rows == 1812 and len(groups) == 1808 and stats.skipped == {"empty text": 4}
    with pytest.raises(DataError, match=r"hh-rlhf-harmless-base-sample.jsonl.gz:67: empty text"):
        load_preferences([BUNDLED])


def test_pairs_made_identical_by_truncation_are_bad_rows():
    formatter = InputFormatter(bert_tokenizer(), input_format="plain", max_length=8)
    group = parse_row(
        {"prompt": "q", "chosen": "a b c d e f g h i j k x", "rejected": "z b c d e f g h i j k x"}, "f:9"
    )
    with pytest.raises(
        DataError, match="f:9: chosen and rejected are identical after truncation to 8 tokens"
    ):
        encode_groups([group], formatter, LoadStats(), skip_invalid=False)
    stats = LoadStats()
    assert encode_groups([group], formatter, stats, skip_invalid=True) == []
    assert stats.skipped == {"chosen and rejected are identical after truncation": 1}


# -- calibration -------------------------------------------------------------------------------------------


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=20000)
    true_t = 2.5
    chosen_first = rng.random(logits.size) < 1.0 / (1.0 + np.exp(-logits / true_t))
    margins = np.where(chosen_first, logits, -logits)  # r_chosen - r_rejected
    assert fit_temperature(margins) == pytest.approx(true_t, rel=0.05)
    assert expected_calibration_error(margins, fit_temperature(margins)) < expected_calibration_error(
        margins, 1.0
    )


# -- the trainer ---------------------------------------------------------------------------------------------


def _tiny_run(model_dir: Path, tmp_path: Path, **options) -> Path:
    from training.pipeline import train

    data = tmp_path / "train.jsonl"
    rows = [
        {"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad {i}"} for i in range(8)
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    config = RewardTrainingConfig(
        model=str(model_dir),
        data=[str(data)],
        output=str(tmp_path / "out"),
        batch_size=4,
        learning_rate=1e-2,
        warmup_ratio=0.0,  # with warmup, HF's schedule gives step 0 a learning rate of 0
        eval_fraction=0.25,
        report_to="none",
        max_length=32,
        device="cpu",
        save_steps=-1,
        **{"max_steps": 2, **options},
    )
    return train(config)


def test_one_training_step_changes_the_parameters(bert_dir: Path, tmp_path: Path):
    from transformers import AutoModelForSequenceClassification

    before = AutoModelForSequenceClassification.from_pretrained(bert_dir).state_dict()
    out = _tiny_run(bert_dir, tmp_path, max_steps=1)
    after = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "classifier.weight" in changed and any(k.startswith("bert.encoder") for k in changed)
    metadata = json.loads((out / "reward.json").read_text())
    assert metadata["provenance"]["train_groups"] == 6 and metadata["provenance"]["eval_groups"] == 2
    # `--precision auto` on a CPU: bf16 autocast only where the CPU computes bf16 natively
    assert metadata["provenance"]["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert metadata["normalization"]["std"] > 0 and metadata["calibration"]["temperature"] > 0
    assert (out / "eval" / "report.md").exists()


def test_freeze_backbone_trains_only_the_head(bert_dir: Path, tmp_path: Path):
    from transformers import AutoModelForSequenceClassification

    before = AutoModelForSequenceClassification.from_pretrained(bert_dir).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(
        _tiny_run(bert_dir, tmp_path, freeze_backbone=True)
    )
    changed = {k for k, v in after.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"classifier.weight"}  # the bias cancels in r_chosen - r_rejected: zero gradient


def test_lora_is_merged_into_a_plain_checkpoint(llama_dir: Path, tmp_path: Path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    out = _tiny_run(llama_dir, tmp_path, lora_r=4, lora_alpha=8)
    keys = set(load_file(out / "model.safetensors"))
    assert not any("lora" in k for k in keys) and "score.weight" in keys
    before = AutoModelForSequenceClassification.from_pretrained(llama_dir).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    assert set(after) == set(before)
    assert not torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )
    assert not torch.equal(before["score.weight"], after["score.weight"])
