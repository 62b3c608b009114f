"""A Llama-style decoder's last layer with its MLP at the pooled token alone gives the model's own rewards,
whole or split at a shared prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from reward_model.engines.cascade_attention import use_cascade_attention
from reward_model.engines.first_token import pool_first_token_only
from reward_model.engines.last_token import LastTokenLayer, pool_last_token_only
from reward_model.engines.shared_prefix import shared_prefix_logits
from reward_model.engines.transformers_engine import TransformersEngine
from reward_model.prefix_sharing import plan_split
from reward_model.tensors import pad_batch, reward_logits
from tests.tiny_models import save_qwen

PROMPT = [5, 17, 23, 42, 8, 9, 11, 30, 31]
# one token, a few, many: rows of very different lengths, so every pooled index differs
SUFFIXES = [[7], [12, 40, 41], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [50, 51]]
ITEMS = [PROMPT + s for s in SUFFIXES]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_qwen(tmp_path_factory.mktemp("qwen"))


def pair(path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    whole = AutoModelForSequenceClassification.from_pretrained(path).eval()
    last = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert pool_last_token_only(last)
    assert isinstance(last.model.layers[-1], LastTokenLayer)
    return whole, last


def plain(model: torch.nn.Module, items: list[list[int]]) -> torch.Tensor:
    batch = pad_batch(items, pad_id=0)
    with torch.inference_mode():
        return reward_logits(model, batch.input_ids, batch.attention_mask)


@pytest.mark.parametrize("fixture", ["llama_dir", "qwen_dir"])
def test_whole_items_give_the_whole_models_rewards(fixture: str, request: pytest.FixtureRequest) -> None:
    whole, last = pair(request.getfixturevalue(fixture))
    expected = plain(whole, ITEMS)
    assert expected.std() > 0.1  # rewards that differ, so a wrong pooled index shows
    torch.testing.assert_close(plain(last, ITEMS), expected, atol=1e-5, rtol=0)
    alone = torch.cat([plain(last, [item]) for item in ITEMS])
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fixture", ["llama_dir", "qwen_dir"])
def test_split_items_give_the_whole_models_rewards(fixture: str, request: pytest.FixtureRequest) -> None:
    whole, last = pair(request.getfixturevalue(fixture))
    use_cascade_attention(last)
    plan = plan_split(ITEMS, [len(PROMPT)] * len(ITEMS))
    with torch.inference_mode():
        split = shared_prefix_logits(last, plan, pad_id=0, device=torch.device("cpu"))
    torch.testing.assert_close(split, plain(whole, ITEMS), atol=1e-5, rtol=0)


def test_only_llama_style_decoders_are_wrapped(bert_dir: Path, llama_dir: Path) -> None:
    options = {"device": torch.device("cpu"), "dtype": torch.float32, "pad_id": 0, "trust_remote_code": False}
    assert TransformersEngine(llama_dir, **options).last_token_only  # type: ignore[arg-type]
    assert not TransformersEngine(bert_dir, **options).last_token_only  # type: ignore[arg-type]
    encoder = AutoModelForSequenceClassification.from_pretrained(bert_dir)
    before = [type(m) for m in encoder.modules()]
    assert not pool_last_token_only(encoder)
    assert [type(m) for m in encoder.modules()] == before
    assert not pool_first_token_only(AutoModelForSequenceClassification.from_pretrained(llama_dir))
