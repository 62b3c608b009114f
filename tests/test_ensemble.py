"""Ensembles: every aggregation checked exactly against the members' own direct forward passes."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from reward_model.checkpoint import EnsembleManifest, EnsembleMember, save_manifest
from reward_model.errors import NonFiniteReward
from reward_model.formatting import RewardInput
from tests.helpers import ITEMS, direct_rewards, running
from tests.tiny_models import save_bert, save_llama

NORMS = [{"mean": 0.5, "std": 2.0}, {"mean": -1.0, "std": 0.5}, {"mean": 0.0, "std": 1.0}]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three members, two architectures and two tokenizers, each with its own normalization."""
    root = tmp_path_factory.mktemp("ensemble")
    save_llama(root / "llama-a", seed=1, normalization=NORMS[0])
    save_bert(root / "bert", seed=2, normalization=NORMS[1], calibration={"temperature": 2.0})
    save_llama(root / "llama-b", seed=3, normalization=NORMS[2])
    members = [
        EnsembleMember(path=p, weight=w) for p, w in (("llama-a", 1.0), ("bert", 3.0), ("llama-b", 0.0))
    ]
    save_manifest(root, EnsembleManifest(members=members, aggregation="mean_minus_std", uncertainty_coef=0.5))
    return root


def member_direct(root: Path, name: str, service, items) -> list[float]:
    """A member's normalized rewards from its own unpadded transformers forward passes."""
    member = next(m for m in service.members if m.name == name)
    raw = direct_rewards(root / name, [e.input_ids for e in member.formatter.encode(items)])
    norm = member.metadata.normalization
    return [(r - norm.mean) / norm.std for r in raw]


@pytest.mark.parametrize("method", ["mean", "median", "min", "mean_minus_std", "weighted"])
async def test_every_aggregation_matches_hand_computed_values(ensemble_dir: Path, method: str):
    async with running(ensemble_dir) as service:
        outcome = await service.score(ITEMS, aggregation=method)
        direct = [member_direct(ensemble_dir, n, service, ITEMS) for n in ("llama-a", "bert", "llama-b")]
    for i, item in enumerate(outcome.items):
        values = [d[i] for d in direct]
        mean = sum(values) / 3
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
        expected = {
            "mean": mean,
            "median": sorted(values)[1],
            "min": min(values),
            "mean_minus_std": mean - 0.5 * std,
            "weighted": (values[0] * 1.0 + values[1] * 3.0 + values[2] * 0.0) / 4.0,  # manifest weights
        }[method]
        assert item.reward == pytest.approx(expected, abs=1e-4)
        assert item.std == pytest.approx(std, abs=1e-4)
        assert list(item.member_rewards) == pytest.approx(values, abs=1e-4)


async def test_the_manifest_default_and_normalization_apply(ensemble_dir: Path):
    async with running(ensemble_dir) as service:
        assert service.default_aggregation == "mean_minus_std" and service.uncertainty_coef == 0.5
        outcome = await service.score(ITEMS[:1])
        assert outcome.normalized and outcome.aggregation == "mean_minus_std"
        raw = [
            (await m.batcher.submit([m.formatter.encode(ITEMS[:1])[0].input_ids])[0]).reward
            for m in service.members
        ]
    normalized = [(r - n["mean"]) / n["std"] for r, n in zip(raw, NORMS, strict=True)]
    assert list(outcome.items[0].member_rewards) == pytest.approx(normalized, abs=1e-5)
    assert outcome.items[0].reward == pytest.approx(
        statistics.fmean(normalized) - 0.5 * statistics.pstdev(normalized), abs=1e-5
    )
    assert raw != pytest.approx(normalized, abs=1e-3)  # normalization really moved the members


async def test_members_with_different_tokenizers_format_their_own_inputs(ensemble_dir: Path):
    async with running(ensemble_dir) as service:
        by_name = {m.name: m for m in service.members}
        llama_a, bert, llama_b = by_name["llama-a"], by_name["bert"], by_name["llama-b"]
        assert llama_a.model.encoding_key == llama_b.model.encoding_key != bert.model.encoding_key
        assert (llama_a.formatter.format_name, bert.formatter.format_name) == ("chat_template", "plain")
        item = RewardInput.from_prompt_response("hi", "hello")
        assert bert.formatter.encode([item])[0].input_ids[0] == bert.model.tokenizer.cls_token_id
        assert llama_a.formatter.encode([item])[0].input_ids[0] == llama_a.model.tokenizer.bos_token_id


async def test_compare_counts_agreeing_members_and_uses_the_ensemble_temperature(ensemble_dir: Path):
    async with running(ensemble_dir) as service:
        result = await service.compare(
            "how do I bake bread?", "mix flour and water", "no", aggregation="mean"
        )
    ma, mb = result.a.member_rewards, result.b.member_rewards
    sign = 1 if result.a.reward > result.b.reward else -1
    assert result.members_agreeing == sum(1 for x, y in zip(ma, mb, strict=True) if (x - y) * sign > 0)
    temperature = (1.0 / 2.0 + 2.0 / 0.5 + 1.0 / 1.0) / 3  # mean of T_i / std_i
    assert result.temperature == pytest.approx(temperature)
    assert result.prob_a_better == pytest.approx(
        1 / (1 + math.exp(-(result.a.reward - result.b.reward) / temperature))
    )


def poison_word(model_dir: Path, word: str) -> None:
    """Make a word's embeddings NaN: any item containing it really fails in this model."""
    token_ids = AutoTokenizer.from_pretrained(model_dir)(word, add_special_tokens=False)["input_ids"]
    weights = load_file(model_dir / "model.safetensors")
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[key][token_ids] = float("nan")
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})


async def test_a_failing_member_fails_the_item_clearly_and_the_service_stays_up(tmp_path: Path):
    save_llama(tmp_path / "good", seed=1)
    save_bert(tmp_path / "fragile", seed=2)
    poison_word(tmp_path / "fragile", "paris")
    save_manifest(
        tmp_path, EnsembleManifest(members=[EnsembleMember(path="good"), EnsembleMember(path="fragile")])
    )
    async with running(tmp_path) as service:
        fine = RewardInput.from_prompt_response("hi", "hello")
        bad = RewardInput.from_prompt_response("where?", "paris")
        with pytest.raises(NonFiniteReward, match="item 1: model 'fragile' produced a non-finite reward"):
            await service.score([fine, bad])
        again = await service.score([fine])
    assert len(again.rewards) == 1 and math.isfinite(again.rewards[0])
    assert service.metrics.nonfinite.labels("fragile")._value.get() == 1


async def test_a_single_model_is_an_ensemble_of_one(llama_dir: Path):
    async with running(llama_dir) as service:
        outcome = await service.score(ITEMS[:2])
    assert [i.std for i in outcome.items] == [0.0, 0.0]
    assert [i.member_rewards[0] for i in outcome.items] == outcome.rewards and not outcome.normalized


async def test_a_temperature_fitted_on_the_ensemble_takes_precedence(ensemble_dir: Path, tmp_path: Path):
    import shutil

    from reward_model.checkpoint import Calibration, load_manifest

    root = tmp_path / "calibrated"
    shutil.copytree(ensemble_dir, root)
    manifest = load_manifest(root)
    manifest.calibration = Calibration(temperature=0.25)
    save_manifest(root, manifest)
    async with running(root) as service:
        result = await service.compare("hi", "hello there", "no")
    assert result.temperature == 0.25
    assert result.prob_a_better == pytest.approx(
        1 / (1 + math.exp(-(result.a.reward - result.b.reward) / 0.25))
    )
