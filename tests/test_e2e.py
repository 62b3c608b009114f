"""End to end: a real `reward-serve` process on 127.0.0.1, real HTTP, real checkpoints."""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.helpers import (
    ITEMS,
    Server,
    direct_pair_rewards,
    direct_rewards,
    running,
    start_server,
    startup_error,
    stop_server,
)
from tests.tiny_models import save_bert

pytestmark = pytest.mark.slow

PAIRS = [
    ("how do I bake bread?", "mix flour, water, salt and yeast, then knead it."),
    ("hi", "no"),
    ("what is two plus two? " * 8, "two plus two is four."),
    ("tell me a joke", "sure! here are three ideas: go for a walk, read a book, or call a friend."),
    ("where is paris?", "paris is the capital of france."),
]


def score(client: httpx.Client, pairs: list[tuple[str, str]], **extra: object) -> dict:
    response = client.post(
        "/score", json={"items": [{"prompt": p, "response": r} for p, r in pairs], **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_served_rewards_equal_a_direct_forward_pass(llama_server: Server, llama_dir: Path):
    with llama_server.client() as client:
        body = score(client, PAIRS)
    assert body["rewards"] == pytest.approx(direct_pair_rewards(llama_dir, PAIRS), abs=1e-4)
    assert body["stds"] == [0.0] * len(PAIRS) and body["normalized"] is False
    assert body["model"] == llama_dir.name


def test_rewards_are_batch_invariant_under_concurrent_load(llama_server: Server):
    with llama_server.client() as client:
        alone = [score(client, [pair])["rewards"][0] for pair in PAIRS]
        mixed = score(client, PAIRS * 8)["rewards"]
        with ThreadPoolExecutor(max_workers=16) as pool:
            concurrent = list(pool.map(lambda i: score(client, [PAIRS[i % 5]])["rewards"][0], range(40)))
    assert max(abs(m - alone[i % 5]) for i, m in enumerate(mixed)) <= 1e-4
    assert max(abs(c - alone[i % 5]) for i, c in enumerate(concurrent)) <= 1e-4


def test_compare_is_symmetric_and_best_of_n_picks_the_argmax(llama_server: Server):
    prompt, a, b = "how do I bake bread?", "mix flour and water", "no"
    with llama_server.client() as client:
        ab = client.post("/compare", json={"prompt": prompt, "response_a": a, "response_b": b}).json()
        ba = client.post("/compare", json={"prompt": prompt, "response_a": b, "response_b": a}).json()
        responses = [r for _, r in PAIRS]
        best = client.post("/best-of-n", json={"prompt": prompt, "responses": responses, "top_k": 2}).json()
        chat = client.post(
            "/compare",
            json={"prompt": [{"role": "user", "content": prompt}], "response_a": a, "response_b": b},
        ).json()
    assert ab["prob_a_better"] + ba["prob_a_better"] == pytest.approx(1.0, abs=1e-9)
    assert ab["prob_a_better"] == pytest.approx(1 / (1 + math.exp(-(ab["reward_a"] - ab["reward_b"]))))
    assert {ab["preferred"], ba["preferred"]} == {"a", "b"}
    assert chat["reward_a"] == pytest.approx(ab["reward_a"], abs=1e-6)  # a string prompt is one user turn
    rewards = best["rewards"]
    assert best["best_index"] == max(range(len(rewards)), key=rewards.__getitem__)
    assert best["best_response"] == responses[best["best_index"]]
    assert best["ranking"] == sorted(range(len(rewards)), key=lambda i: -rewards[i])[:2]


def test_get_reward_speaks_the_openrlhf_protocol(llama_server: Server, llama_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    query = tokenizer.apply_chat_template(conversation, tokenize=False)
    with llama_server.client() as client:
        body = client.post("/get_reward", json={"query": [query], "prompts": ["hi"], "labels": [None]}).json()
        scored = score(client, [("hi", "hello there")])
    assert set(body) == {"rewards", "scores", "extra_logs"}
    assert body["rewards"] == body["scores"]
    assert body["rewards"][0] == pytest.approx(scored["rewards"][0], abs=1e-4)
    assert body["extra_logs"]["truncated"] == [0.0]


def test_metrics_expose_the_service_and_move(llama_server: Server):
    with llama_server.client() as client:
        before = client.get("/metrics").text
        score(client, [*PAIRS, ("word " * 300, "ok")])
        after = client.get("/metrics").text

    def value(text: str, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    assert value(after, "reward_items_scored_total") - value(before, "reward_items_scored_total") == 6
    assert value(after, "reward_items_truncated_total") - value(before, "reward_items_truncated_total") == 1
    assert value(after, 'reward_requests_total{endpoint="/score",status="200"}') > value(
        before, 'reward_requests_total{endpoint="/score",status="200"}'
    )
    for name in (
        'reward_request_duration_seconds_count{endpoint="/score"}',
        'reward_queue_wait_seconds_count{member="' + llama_server_member(after) + '"}',
        "reward_value_count",
    ):
        assert value(after, name) > value(before, name), name
    for family in (
        "reward_inference_duration_seconds",
        "reward_batch_size_items",
        "reward_batch_size_tokens",
        "reward_batch_padding_ratio",
        "reward_queue_depth_items",
        "reward_nonfinite_total",
        "reward_ready",
        "reward_batch_real_tokens_total",
        "reward_items_rejected_total",
    ):
        assert f"# TYPE {family}" in after or f"# TYPE {family.removesuffix('_total')}" in after, family


def llama_server_member(metrics_text: str) -> str:
    match = re.search(r'reward_queue_wait_seconds_count\{member="([^"]+)"\}', metrics_text)
    assert match
    return match.group(1)


def test_responses_carry_timing_headers(llama_server: Server):
    with llama_server.client() as client:
        response = client.post("/score", json={"items": [{"prompt": "hi", "response": "ok"}]})
    assert float(response.headers["x-queue-time-ms"]) >= 0
    assert float(response.headers["x-inference-time-ms"]) > 0


def test_the_server_runs_uvicorns_c_http_parser_and_libuv_loop(llama_server: Server):
    """httptools and uvloop are the project's dependencies, and the running process has them loaded:
    a single client's request costs ~2 ms less than with h11 and asyncio's own loop (README)."""
    with llama_server.client() as client:
        assert client.get("/health").status_code == 200
    loaded = Path(f"/proc/{llama_server.process.pid}/maps").read_text()
    assert re.search(r"/httptools/parser/parser\.cpython[^/]*\.so$", loaded, re.MULTILINE)
    assert re.search(r"/uvloop/loop\.cpython[^/]*\.so$", loaded, re.MULTILINE)


def test_info_describes_the_model(llama_server: Server, llama_dir: Path):
    with llama_server.client() as client:
        info = client.get("/info").json()
    [member] = info["members"]
    assert info["ready"] and info["num_members"] == 1 and info["aggregation"] == "mean"
    assert member["architecture"] == "LlamaForSequenceClassification"
    assert (member["device"], member["dtype"], member["input_format"]) == ("cpu", "float32", "chat_template")
    assert (member["engine"], member["compiled"]) == ("transformers", False)  # the tests' REWARD_COMPILE
    assert member["max_length"] == 128
    assert len(member["weights_sha256"]) == 64
    # The limits the batcher applies: the 16384-token budget and the CPU's 0.1 padding bound.
    assert info["limits"] == {
        "max_input_tokens": 128,
        "max_batch_size": 64,
        "max_batch_tokens": 16384,
        "max_padding_ratio": 0.1,
        "max_wait_ms": 5.0,
        "max_queue_items": 4096,
        "max_items_per_request": 1024,
        "max_body_bytes": 16 * 1024 * 1024,
        "truncate": True,
    }


def test_error_statuses_over_http(llama_server: Server):
    with llama_server.client() as client:
        assert client.post("/score", json={"items": []}).status_code == 422
        unknown = client.post("/compare", json={"prompt": "a", "response_a": "b", "response_b": "c", "x": 1})
        assert unknown.status_code == 422 and unknown.json()["error"]["type"] == "invalid_request"
        huge = client.post(
            "/get_reward",
            content=b"{" + b" " * (17 * 1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        )
        assert huge.status_code == 413 and huge.json()["error"]["type"] == "payload_too_large"
        assert client.get("/health").status_code == 200  # still serving


def test_minilm_parity_with_transformers(minilm_dir: Path, tmp_path: Path):
    """The real pretrained encoder: served rewards equal the model's own tokenizer + forward pass."""
    server = start_server(minilm_dir, tmp_path)
    try:
        with server.client() as client:
            body = score(client, PAIRS)
    finally:
        stop_server(server)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir).eval()
    texts = [f"\n\nHuman: {p}\n\nAssistant: {r}" for p, r in PAIRS]
    with torch.no_grad():
        expected = [float(model(**tokenizer(t, return_tensors="pt")).logits[0, 0]) for t in texts]
    assert body["rewards"] == pytest.approx(expected, abs=1e-4)


def bad_checkpoint(tmp_path: Path, breakage: str) -> Path:
    model_dir = save_bert(tmp_path / breakage)
    if breakage == "num_labels":
        config = json.loads((model_dir / "config.json").read_text())
        config["num_labels"] = 2
        config["id2label"] = {"0": "a", "1": "b"}
        (model_dir / "config.json").write_text(json.dumps(config))
    elif breakage == "tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (model_dir / name).unlink()
    elif breakage == "reward_json":
        (model_dir / "reward.json").write_text('{"normalization": {"mean": 0, "std": -1}}')
    elif breakage == "pickle":
        from safetensors.torch import load_file

        weights = model_dir / "model.safetensors"
        torch.save(load_file(weights), model_dir / "pytorch_model.bin")
        weights.unlink()
    return model_dir


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("num_labels", "num_labels is 2, a reward model must have num_labels == 1"),
        ("tokenizer", "no tokenizer files (tokenizer.json or tokenizer_config.json)"),
        ("reward_json", "reward.json: normalization.std: Input should be greater than 0"),
        (
            "pickle",
            "only pickle weights (pytorch_model.bin), which can run code when loaded; convert them to "
            "safetensors, or pass --allow-pickle if you trust this checkpoint",
        ),
    ],
)
def test_a_broken_checkpoint_stops_startup_with_one_line(tmp_path: Path, breakage: str, message: str):
    assert message in startup_error(bad_checkpoint(tmp_path, breakage))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "quantum"], "--device: Value error, device must be auto, cpu, cuda or cuda:N"),
        (["--max-batch-size", "0"], "--max-batch-size: Input should be greater than or equal to 1"),
        (["--dtype", "float8"], "--dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
    ],
)
def test_a_bad_setting_stops_startup_with_one_line(llama_dir: Path, args: list[str], message: str):
    assert startup_error(llama_dir, *args) == f"reward-serve: error: {message}"


def test_a_missing_checkpoint_stops_startup_with_one_line(tmp_path: Path):
    missing = tmp_path / "nowhere"
    assert startup_error(missing).endswith(f"{missing}: checkpoint directory does not exist")


async def test_pickle_weights_load_when_the_operator_allows_them(tmp_path: Path):
    model_dir = bad_checkpoint(tmp_path, "pickle")
    async with running(model_dir, allow_pickle=True) as service:
        outcome = await service.score(ITEMS[:2])
    ids = [e.input_ids for e in service.members[0].formatter.encode(ITEMS[:2])]
    assert outcome.rewards == pytest.approx(direct_rewards(model_dir, ids), abs=1e-4)
