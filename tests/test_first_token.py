"""A first-token-pooled encoder's last layer run for the first token alone gives the model's own rewards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward_model.engines.first_token import FirstTokenLayer, pool_first_token_only
from reward_model.engines.transformers_engine import TransformersEngine

TEXTS = ["a short one", "a much longer text, with padding for the others " * 3, "mid length text here", "x"]


def logits(model: torch.nn.Module, tokenizer: object, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        return model(**batch).logits[:, 0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("fixture", ["bert_dir", "minilm_dir"])
def test_the_last_layer_for_the_first_token_alone_gives_the_same_rewards(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(path)
    whole = AutoModelForSequenceClassification.from_pretrained(path).eval()
    first = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert pool_first_token_only(first)
    assert isinstance(first.bert.encoder.layer[-1], FirstTokenLayer)
    expected = logits(whole, tokenizer, TEXTS)
    torch.testing.assert_close(logits(first, tokenizer, TEXTS), expected, atol=1e-5, rtol=0)
    alone = torch.stack([logits(first, tokenizer, [t])[0] for t in TEXTS])
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=0)


def test_decoders_are_left_whole(llama_dir: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(llama_dir)
    before = [type(m) for m in model.modules()]
    assert not pool_first_token_only(model)
    assert [type(m) for m in model.modules()] == before


def test_the_engine_runs_encoders_first_token_only(bert_dir: Path, llama_dir: Path) -> None:
    options = {"device": torch.device("cpu"), "dtype": torch.float32, "pad_id": 0, "trust_remote_code": False}
    assert TransformersEngine(bert_dir, **options).first_token_only  # type: ignore[arg-type]
    assert not TransformersEngine(llama_dir, **options).first_token_only  # type: ignore[arg-type]
