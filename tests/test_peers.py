"""The benchmark's peer servers (bench/peers.py): request and answer shapes, infinity's tokenizer view,
and, where `bash bench/install_peers.sh` has built them, each real peer's raw rewards against ours.

The real-peer tests skip when `.venv-peers/<peer>` is absent (CI's fresh clone has none).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import peer_runs, peers
from reward_model.formatting import InputFormatter, RewardInput

ANSWERS = {
    # The documented answer shapes, out of order (infinity sorts its results by score).
    "vllm": {
        "data": [
            {"index": 1, "label": "LABEL_0", "probs": [0.5], "num_classes": 1},
            {"index": 0, "label": "LABEL_0", "probs": [-1.25], "num_classes": 1},
        ]
    },
    "infinity": {"results": [{"relevance_score": 0.5, "index": 1}, {"relevance_score": -1.25, "index": 0}]},
}


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_each_peer_gets_the_texts_in_one_body_and_its_rewards_come_back_in_order(name: str):
    peer = peers.PEERS[name]
    body = peer.body(["first", "second"])
    assert body["model"] == peers.SERVED_NAME
    assert body.get("input", body.get("documents")) == ["first", "second"]
    assert peer.rewards(ANSWERS[name]) == [-1.25, 0.5]
    bodies = peers.peer_requests(peer, list("abcde"), 2)
    assert [len(b.get("input", b.get("documents"))) for b in bodies] == [2, 2]


def test_peer_commands_bind_loopback_and_ask_for_raw_logits(tmp_path: Path):
    vllm = peers.PEERS["vllm"].command(tmp_path, 8123)
    assert vllm[vllm.index("--host") + 1] == "127.0.0.1" and vllm[vllm.index("--port") + 1] == "8123"
    assert '"use_activation": false' in vllm[vllm.index("--pooler-config") + 1]
    assert peers.PEERS["vllm"].body(["x"])["use_activation"] is False
    env = peers.PEERS["vllm"].environment({"VIRTUAL_ENV": "/elsewhere"})
    assert "VIRTUAL_ENV" not in env and env["HF_HUB_OFFLINE"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"]
    infinity = peers.PEERS["infinity"].command(tmp_path, 8124)
    assert infinity[infinity.index("--host") + 1] == "127.0.0.1"
    assert peers.PEERS["infinity"].body(["x"])["raw_scores"] is True


def test_infinity_view_makes_the_rerank_pair_the_exact_ids_we_score(bert_dir: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    view = peers.infinity_view(bert_dir, tmp_path / "view")
    assert (view / "model.safetensors").resolve() == (bert_dir / "model.safetensors").resolve()
    ours = AutoTokenizer.from_pretrained(bert_dir)
    formatter = InputFormatter(ours, input_format="plain", max_length=512)
    theirs = AutoTokenizer.from_pretrained(view)
    texts, fits = peers.render_texts(bert_dir, peer_runs.SMOKE_ITEMS)
    assert all(fits)
    inputs = [RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in peer_runs.SMOKE_ITEMS]
    # As infinity's cross-encoder tokenizes: stripped (query, document) pairs, padded, longest-first.
    pairs = theirs([["", t.strip()] for t in texts], truncation="longest_first", return_token_type_ids=True)
    assert pairs["input_ids"] == [e.input_ids for e in formatter.encode(inputs)]
    assert all(set(types) == {0} for types in pairs["token_type_ids"])


def test_bert_style_post_processors_are_adapted_too():
    post = {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}
    pair = peers._single_as_pair(post)["pair"]
    assert [next(iter(p.values()))["id"] for p in pair] == ["[CLS]", "A", "B", "[SEP]"]
    with pytest.raises(RuntimeError, match="ByteLevel"):
        peers._single_as_pair({"type": "ByteLevel"})


def test_items_that_our_formatter_would_truncate_are_flagged(bert_dir: Path):
    long_item = {"prompt": "hello " * 2000, "response": "no"}
    _, fits = peers.render_texts(bert_dir, [peer_runs.SMOKE_ITEMS[0], long_item])
    assert fits == [True, False]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_real_peer_returns_our_raw_rewards(name: str, minilm_dir: Path, tmp_path: Path):
    peer = peers.PEERS[name]
    if not peer.installed():
        pytest.skip(f"{peer.label} is not installed (bash bench/install_peers.sh {name})")
    texts, fits = peers.render_texts(minilm_dir, peer_runs.SMOKE_ITEMS)
    assert all(fits)
    ours = peer_runs.reference_rewards(minilm_dir, peer_runs.SMOKE_ITEMS)
    port = peer_runs.free_port()
    process = peer_runs.launch(peer, minilm_dir, port, tmp_path, timeout=500)
    try:
        base = f"http://127.0.0.1:{port}"
        parity = peer_runs.check_parity(peer, base, texts, ours)
        assert parity["ok"], parity
        # A batch with the three texts in another order and repeated: same rewards, item by item.
        order = [2, 0, 1] * 3
        again = peer_runs.peer_rewards(peer, base, [texts[i] for i in order])
        assert again == pytest.approx([ours[i] for i in order], abs=1e-4)
    finally:
        peer_runs.shutdown(process)
    assert process.poll() is not None
