"""Prompts kept across batches: the LRU's rules, and that a prompt taken from it gives the rewards a prompt
run in its own batch gives, on tiny Llama- and Qwen-style decoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reward_model.engines.prefix_cache import PrefixKVCache, PrefixStates
from reward_model.formatting import RewardInput
from tests.helpers import direct_rewards, running
from tests.tiny_models import save_llama, save_qwen

PROMPTS = [
    "Reward models score responses so that a policy can learn which answers people prefer. Why?",
    "Name three things that make a recipe easy to follow for someone who has never cooked before.",
]
ANSWERS = [
    "x",
    "Because people prefer them.",
    "I cannot help with that.",
    "Short lists, exact amounts, times.",
]


def states(tokens: int, layers: int = 2) -> PrefixStates:
    """Stand-in keys and values of a `tokens`-long prefix: 2 heads x 4 dims of float32 per layer."""
    return PrefixStates([torch.zeros(2, tokens, 4)] * layers, [torch.zeros(2, tokens, 4)] * layers)


def test_the_cache_keeps_the_most_recently_used_prefixes_within_its_bytes():
    entry = states(8).nbytes  # 2 layers x (K + V) x 2 x 8 x 4 floats
    assert entry == 2 * 2 * 2 * 8 * 4 * 4
    cache = PrefixKVCache(max_bytes=2 * entry)
    a, b, c = (1,) * 8, (2,) * 8, (3,) * 8
    cache.put(a, states(8))
    cache.put(b, states(8))
    assert cache.get(a) is not None  # a is now the most recently used: b goes first
    cache.put(c, states(8))
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None
    assert len(cache) == 2 and cache.nbytes == 2 * entry
    assert (cache.hits, cache.hit_tokens) == (3, 24)
    cache.put((4,) * 24, states(24))  # larger than the whole cap: never kept, nothing evicted for it
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    off = PrefixKVCache(max_bytes=0)
    off.put(a, states(8))
    assert off.get(a) is None and len(off) == 0


@pytest.fixture(scope="module", params=["llama", "qwen"])
def decoder_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    save = save_llama if request.param == "llama" else save_qwen
    return save(tmp_path_factory.mktemp(request.param), max_length=256)


def items(prompt: str, answers: list[str]) -> list[RewardInput]:
    return [RewardInput.from_prompt_response(prompt, a) for a in answers]


async def test_a_prompt_from_an_earlier_batch_scores_as_if_run_again(decoder_dir: Path):
    later = items(PROMPTS[0], ANSWERS[2:]) + items(PROMPTS[1], ANSWERS[:2])  # one prompt kept, one new
    async with running(decoder_dir) as service:
        member = service.members[0]
        cache = member.model.engine.prefix_cache
        assert cache is not None and cache.max_bytes == 1024 * 2**20
        await service.score(items(PROMPTS[0], ANSWERS[:2]))
        assert (len(cache), cache.hits) == (1, 0)
        kept = (await service.score(later)).rewards
        assert (len(cache), cache.hits) == (2, 1)
        encoded = member.model.encode(later)
        p0, _, p1, _ = member.model.prefix_lengths(encoded)
        # each batch's pairs ran their prompt once (P0 in the first, P0 and P1 in the second), and the
        # second batch did not run P0 at all
        assert service.metrics.prefix_cache_hits.labels(member.name)._value.get() == 1
        assert service.metrics.prefix_tokens_saved.labels(member.name)._value.get() == 3 * p0 + p1
        assert "kept for later batches (1024 MiB" in member.model.prefix_sharing_note
    async with running(decoder_dir, prefix_cache_mb=0.0) as service:
        cache = service.members[0].model.engine.prefix_cache
        await service.score(items(PROMPTS[0], ANSWERS[:2]))
        not_kept = (await service.score(later)).rewards
        assert cache is not None and (len(cache), cache.hits) == (0, 0)
    assert kept == pytest.approx(not_kept, abs=1e-4)
    assert kept == pytest.approx(direct_rewards(decoder_dir, [e.input_ids for e in encoded]), abs=1e-4)


async def test_encoders_keep_nothing(bert_dir: Path):
    async with running(bert_dir) as service:
        await service.score(items(PROMPTS[0], ANSWERS) * 2)
        cache = service.members[0].model.engine.prefix_cache
        assert cache is not None and cache.max_bytes == 0 and len(cache) == 0
