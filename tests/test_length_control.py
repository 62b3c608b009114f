"""Length control: a per-token penalty and the residual of the reward's fitted length trend, applied
exactly, per request or as the server's default, in /score, /compare and /best-of-n alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from app.server import create_app
from app.settings import Settings
from reward_model.checkpoint import (
    EnsembleManifest,
    EnsembleMember,
    RewardMetadata,
    read_layout,
    require_length_fit,
    save_manifest,
)
from reward_model.ensemble import Combiner, LengthControl
from reward_model.errors import CheckpointError
from reward_model.formatting import InputFormatter, RewardInput
from tests.helpers import startup_error, wait_ready
from tests.tiny_models import save_llama
from training.calibration import fit_length

FIT = {"slope": 0.25, "mean_tokens": 6.0, "correlation": 0.5}
PROMPT = "how do I bake bread?"
RESPONSES = ["no", "mix flour, water, salt and yeast, then knead it well and let it rise.", "bake it."]


def test_the_combiner_applies_both_exactly_member_by_member():
    fitted = RewardMetadata.model_validate({"normalization": {"mean": 1.0, "std": 2.0}, "length": FIT})
    other = RewardMetadata.model_validate(
        {"length": {"slope": -1.0, "mean_tokens": 2.0, "correlation": -0.1}}
    )
    combiner = Combiner(metadata=(fitted, other), weights=(1.0, 1.0))
    both = LengthControl(penalty=0.1, residual=True)
    combined = combiner.combine([3.0, 5.0], normalized=True, length=both, response_tokens=[10, 12])
    member_a = (3.0 - 0.25 * (10 - 6.0) - 1.0) / 2.0  # its own trend, then its own normalization
    member_b = 5.0 + 1.0 * (12 - 2.0)
    assert combined.member_rewards == pytest.approx((member_a, member_b))
    assert combined.reward == pytest.approx((member_a + member_b) / 2 - 0.1 * 10)  # first member's tokens
    plain = combiner.combine([3.0, 5.0], normalized=True)
    assert plain.reward == pytest.approx(((3.0 - 1.0) / 2.0 + 5.0) / 2)


def test_the_length_trend_is_the_least_squares_line():
    tokens = np.array([1.0, 2.0, 3.0, 4.0])
    fit = fit_length(3.0 - 0.5 * tokens, tokens)
    assert fit is not None and fit.slope == pytest.approx(-0.5) and fit.mean_tokens == 2.5
    assert fit.correlation == pytest.approx(-1.0)
    assert fit_length(np.array([1.0, 2.0]), np.array([3.0, 3.0])) is None  # lengths that do not vary


def response_tokens(model_dir: Path) -> list[int]:
    formatter = InputFormatter(AutoTokenizer.from_pretrained(model_dir), input_format="auto", max_length=128)
    encoded = formatter.encode([RewardInput.from_prompt_response(PROMPT, r) for r in RESPONSES])
    return [e.response_tokens for e in encoded]


@pytest.fixture(scope="module")
def fitted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama(tmp_path_factory.mktemp("fitted"), length=FIT)


def test_score_compare_and_best_of_n_use_the_adjusted_reward(fitted_dir: Path):
    with TestClient(create_app(Settings(model=str(fitted_dir)))) as client:
        wait_ready(client)
        items = [{"prompt": PROMPT, "response": r} for r in RESPONSES]
        raw = np.array(client.post("/score", json={"items": items}).json()["rewards"])
        tokens = np.array(response_tokens(fitted_dir))
        assert len(set(tokens)) == 3  # the three responses differ in length
        penalized = client.post("/score", json={"items": items, "length_penalty": 0.5}).json()["rewards"]
        assert penalized == pytest.approx(raw - 0.5 * tokens, abs=1e-5)
        residual = client.post("/score", json={"items": items, "length_residual": True}).json()["rewards"]
        assert residual == pytest.approx(raw - 0.25 * (tokens - 6.0), abs=1e-5)
        options = {"length_penalty": 0.5, "length_residual": True}
        adjusted = raw - 0.25 * (tokens - 6.0) - 0.5 * tokens
        ab = client.post(
            "/compare",
            json={"prompt": PROMPT, "response_a": RESPONSES[0], "response_b": RESPONSES[1], **options},
        ).json()
        ba = client.post(
            "/compare",
            json={"prompt": PROMPT, "response_a": RESPONSES[1], "response_b": RESPONSES[0], **options},
        ).json()
        assert [ab["reward_a"], ab["reward_b"]] == pytest.approx(adjusted[:2], abs=1e-5)
        assert ab["prob_a_better"] + ba["prob_a_better"] == pytest.approx(1.0)  # still symmetric
        assert ab["reward_a"] == pytest.approx(ba["reward_b"]) and ab["preferred"] != ba["preferred"]
        ranked = client.post("/best-of-n", json={"prompt": PROMPT, "responses": RESPONSES, **options}).json()
        assert ranked["ranking"] == sorted(range(3), key=lambda i: -adjusted[i])
        assert client.get("/info").json()["length_control"] == {
            "penalty": 0.0,
            "residual": False,
            "residual_available": True,
        }
        assert client.get("/info").json()["members"][0]["length_fit"] == FIT


def test_the_server_default_applies_and_a_request_can_turn_it_off(fitted_dir: Path):
    with TestClient(create_app(Settings(model=str(fitted_dir), length_penalty=0.5))) as client:
        wait_ready(client)
        items = [{"prompt": PROMPT, "response": r} for r in RESPONSES]
        default = np.array(client.post("/score", json={"items": items}).json()["rewards"])
        off = np.array(client.post("/score", json={"items": items, "length_penalty": 0}).json()["rewards"])
        assert default == pytest.approx(off - 0.5 * np.array(response_tokens(fitted_dir)), abs=1e-5)
        assert client.get("/info").json()["length_control"]["penalty"] == 0.5


def test_a_residual_without_a_fit_is_refused(llama_dir: Path, tmp_path: Path):
    with TestClient(create_app(Settings(model=str(llama_dir)))) as client:
        wait_ready(client)
        response = client.post(
            "/score", json={"items": [{"prompt": "a", "response": "b"}], "length_residual": True}
        )
        assert response.status_code == 422
        assert response.json()["error"]["message"] == (
            "length_residual: the model's reward.json has no length fit (retrain it)"
        )
        negative = client.post(
            "/score", json={"items": [{"prompt": "a", "response": "b"}], "length_penalty": -1}
        )
        assert negative.status_code == 422
    message = startup_error(llama_dir, "--length-residual")
    assert message.endswith(f"no length fit in the reward.json of {llama_dir.name} (retrain it)"), message


def test_an_ensemble_needs_a_fit_in_every_member(fitted_dir: Path, llama_dir: Path, tmp_path: Path):
    members = [
        EnsembleMember(path=str(fitted_dir), name="fitted"),
        EnsembleMember(path=str(llama_dir), name="bare"),
    ]
    save_manifest(tmp_path, EnsembleManifest(members=members))
    layout = read_layout(tmp_path)
    assert not Combiner.for_layout(layout).length_fits()
    with pytest.raises(CheckpointError, match=r"no length fit in the reward\.json of bare"):
        require_length_fit(layout)
