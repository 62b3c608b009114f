"""Shared-prompt scoring on tiny Llama- and Qwen-style decoders: same rewards on and off, alone, grouped."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from reward_model.checkpoint import EnsembleManifest, EnsembleMember, save_manifest
from reward_model.formatting import RewardInput
from reward_model.prefix_sharing import MIN_SHARED_PREFIX
from tests.helpers import GatedRunner, GatedService, direct_rewards, running, start_server, stop_server, until
from tests.tiny_models import save_bert, save_llama, save_qwen

PROMPT = "Reward models score responses so that a policy can learn which answers people prefer. Why?"
RESPONSES = [
    "x",  # one token
    "Because people prefer them.",
    "Sure! Here are three ideas: go for a walk, read a book, or call a friend. " * 3,
    "I am sorry, but I cannot help with that request.",
]


def responses(n: int) -> list[str]:
    return [f"{RESPONSES[i % len(RESPONSES)]} {i}" if i >= len(RESPONSES) else RESPONSES[i] for i in range(n)]


@pytest.fixture(scope="module", params=["llama", "qwen"])
def decoder_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    save = save_llama if request.param == "llama" else save_qwen
    return save(tmp_path_factory.mktemp(request.param), max_length=256)


async def scored(model: Path, items: Sequence[RewardInput], sharing: bool) -> list[float]:
    async with running(model, prefix_sharing=sharing) as service:
        assert service.members[0].model.shares_prefixes is sharing
        return (await service.score(items)).rewards


@pytest.mark.parametrize("n", [1, 2, 16])
async def test_sharing_on_and_off_give_the_same_rewards(decoder_dir: Path, n: int):
    items = [RewardInput.from_prompt_response(PROMPT, r) for r in responses(n)]
    async with running(decoder_dir) as service:
        encoded = service.members[0].model.encode(items)
        splits = service.members[0].model.prefix_lengths(encoded)
        on = (await service.score(items)).rewards
    assert all(s >= MIN_SHARED_PREFIX for s in splits)  # the chat-formatted prompt really splits
    assert len({tuple(e.input_ids[:s]) for e, s in zip(encoded, splits, strict=True)}) == 1
    off = await scored(decoder_dir, items, sharing=False)
    assert on == pytest.approx(off, abs=1e-4)
    assert on == pytest.approx(direct_rewards(decoder_dir, [e.input_ids for e in encoded]), abs=1e-4)


async def test_an_item_alone_and_in_a_group_of_16_scores_the_same(decoder_dir: Path):
    items = [RewardInput.from_prompt_response(PROMPT, r) for r in responses(16)]
    async with running(decoder_dir) as service:
        grouped = (await service.score(items)).rewards
        alone = [(await service.score([item])).rewards[0] for item in items]
    assert max(abs(a - b) for a, b in zip(alone, grouped, strict=True)) <= 1e-4


async def test_multi_turn_conversations_share_their_history(decoder_dir: Path):
    history = [
        {"role": "system", "content": "You are a careful assistant who answers in one sentence."},
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": "Because people prefer them."},
        {"role": "user", "content": "thanks, and what is two plus two?"},
    ]
    items = [RewardInput.from_messages([*history, {"role": "assistant", "content": r}]) for r in RESPONSES]
    on = await scored(decoder_dir, items, sharing=True)
    assert on == pytest.approx(await scored(decoder_dir, items, sharing=False), abs=1e-4)


async def test_a_prompt_token_that_merges_with_the_response_goes_to_the_response(llama_dir: Path):
    prompt = "<s>Human: what is the capital of France? " * 3 + "Assistant: The capi"
    queries = [prompt + "tal of France is Paris.", prompt + "tal is Berlin."]
    items = [RewardInput.raw(q, prompt) for q in queries]
    async with running(llama_dir) as service:
        model = service.members[0].model
        encoded = model.encode(items)
        whole_prompt = model.encode([RewardInput.raw(prompt)])[0].input_ids
        on = (await service.score(items)).rewards
    boundary = encoded[0].prompt_tokens
    assert boundary is not None and boundary == encoded[1].prompt_tokens
    assert encoded[0].input_ids[:boundary] == whole_prompt[:boundary]  # the shared part is identical
    assert whole_prompt[boundary] != encoded[0].input_ids[boundary]  # "capi" + "tal" merged
    assert on == pytest.approx(await scored(llama_dir, items, sharing=False), abs=1e-4)


def test_get_reward_with_and_without_prompts(llama_dir: Path, tmp_path: Path):
    prompt = "<s><|user|>" + PROMPT + "</s><|assistant|>"
    queries = [prompt + r + "</s>" for r in RESPONSES]
    bodies = {
        "prompts": {"query": queries, "prompts": [prompt] * len(queries)},
        "common prefix": {"query": queries},
        "alone": None,
    }
    results = {}
    for args in ((), ("--no-prefix-sharing",)):
        server = start_server(llama_dir, tmp_path, *args)
        try:
            with server.client() as client:
                for name, body in bodies.items():
                    if body is None:
                        answers = [client.post("/get_reward", json={"query": [q]}) for q in queries]
                        rewards = [a.json()["rewards"][0] for a in answers]
                    else:
                        response = client.post("/get_reward", json=body)
                        assert response.status_code == 200, response.text
                        rewards = response.json()["rewards"]
                    results[(args, name)] = rewards
                info = client.get("/info").json()["members"][0]
                mismatch = client.post("/get_reward", json={"query": queries, "prompts": [prompt]})
        finally:
            stop_server(server)
        assert info["prefix_sharing"] is (not args)
        assert mismatch.status_code == 422
        assert mismatch.json()["error"]["message"] == "1 prompts for 4 queries: give one per query"
    reference = results[(("--no-prefix-sharing",), "alone")]
    for key, rewards in results.items():
        assert rewards == pytest.approx(reference, abs=1e-4), key


async def test_a_prompts_items_from_concurrent_requests_run_as_one_group(decoder_dir: Path):
    items = [RewardInput.from_prompt_response(PROMPT, r) for r in responses(9)]
    GatedRunner.reset()
    async with running(decoder_dir, GatedService, max_wait_ms=0.0) as service:
        first = asyncio.create_task(service.score(items[:1]))
        assert await asyncio.to_thread(GatedRunner.entered.wait, 60)
        rest = [asyncio.create_task(service.score([item])) for item in items[1:]]
        batcher = service.members[0].batcher
        await until(lambda: batcher.queue_depth == len(rest), "every request queued behind the gate")
        GatedRunner.gate.set()
        rewards = [(await first).rewards[0]] + [(await task).rewards[0] for task in rest]
        metrics, name = service.metrics, service.members[0].name
    assert [len(b) for b in GatedRunner.batches] == [1, 8]  # eight separate requests, one batch
    assert len(set(GatedRunner.batches[1])) == 1 and GatedRunner.batches[1][0] >= MIN_SHARED_PREFIX
    # 7 items ran after the group's prompt; and the prompt itself did not run again: the first
    # request's batch left it in the prefix cache
    saved = metrics.prefix_tokens_saved.labels(name)._value.get()
    assert saved == 8 * GatedRunner.batches[1][0]
    assert metrics.prefix_cache_hits.labels(name)._value.get() == 1
    assert rewards == pytest.approx(await scored(decoder_dir, items, sharing=False), abs=1e-4)


async def test_an_ensemble_of_a_decoder_and_an_encoder_aggregates_the_same(tmp_path: Path):
    save_llama(tmp_path / "llama", seed=1, max_length=256, normalization={"mean": 0.5, "std": 2.0})
    save_bert(tmp_path / "bert", seed=2, max_length=128)
    members = [EnsembleMember(path="llama"), EnsembleMember(path="bert")]
    save_manifest(tmp_path, EnsembleManifest(members=members))
    items = [RewardInput.from_prompt_response(PROMPT, r) for r in responses(6)]
    async with running(tmp_path) as service:
        shares = {m.name: m.model.shares_prefixes for m in service.members}
        on = await service.score(items)
    async with running(tmp_path, prefix_sharing=False) as service:
        off = await service.score(items)
    assert shares == {"llama": True, "bert": False}
    assert on.rewards == pytest.approx(off.rewards, abs=1e-4)
    for a, b in zip(on.items, off.items, strict=True):
        assert a.member_rewards == pytest.approx(b.member_rewards, abs=1e-4)
