"""Cascade attention (suffixes over shared prefixes, merged by log-sum-exp) against plain attention."""

from __future__ import annotations

import pytest
import torch

from reward_model.engines.cascade_attention import PrefixGroups, attend, cascade_attention

HEADS, KV_HEADS, DIM, WIDTH = 4, 2, 16, 7
PREFIX_LENGTHS = (9, 5, 12)


class Layer(torch.nn.Module):
    """What transformers' attention functions read off an attention module."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_idx, self.is_causal = 0, True
        self.num_key_value_groups = HEADS // KV_HEADS


def reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
) -> torch.Tensor:
    """One row: its queries over [its prefix, its suffix], the suffix causal, by plain softmax."""
    group = HEADS // KV_HEADS
    keys = torch.cat([prefix_k, key], dim=1).repeat_interleave(group, dim=0)
    values = torch.cat([prefix_v, value], dim=1).repeat_interleave(group, dim=0)
    scores = query @ keys.transpose(-1, -2) / DIM**0.5
    allowed = torch.ones(WIDTH, prefix_k.shape[1] + WIDTH, dtype=torch.bool)
    allowed[:, prefix_k.shape[1] :] = torch.ones(WIDTH, WIDTH, dtype=torch.bool).tril()
    return (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ values).transpose(0, 1)


def batch(rows: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PrefixGroups]:
    """Queries, suffix keys and values for rows whose prefix indices are `rows`, and their prefixes."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(len(rows), HEADS, WIDTH, DIM, generator=g)
    key = torch.randn(len(rows), KV_HEADS, WIDTH, DIM, generator=g)
    value = torch.randn(len(rows), KV_HEADS, WIDTH, DIM, generator=g)
    g = torch.Generator().manual_seed(99)  # the prefixes are the same whatever the rows
    keys = [torch.randn(KV_HEADS, n, DIM, generator=g) for n in PREFIX_LENGTHS]
    values = [torch.randn(KV_HEADS, n, DIM, generator=g) for n in PREFIX_LENGTHS]
    index = torch.tensor(rows)
    groups = [(index == p).nonzero().flatten() for p in range(len(PREFIX_LENGTHS))]
    return query, key, value, PrefixGroups(keys=[keys], values=[values], rows=groups)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_attend_returns_attention_and_its_log_sum_exp(causal: bool, fused: bool) -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, HEADS, WIDTH, DIM, generator=g) for _ in range(3))
    out, lse = attend(q, k, v, causal=causal, scale=0.25, fused=fused)
    scores = q @ k.transpose(-1, -2) * 0.25
    if causal:
        scores = scores.masked_fill(torch.ones(WIDTH, WIDTH, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(out, scores.softmax(-1) @ v, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse, scores.logsumexp(-1), atol=1e-6, rtol=1e-5)


def test_each_row_attends_to_its_own_prefix_and_causally_to_its_suffix() -> None:
    rows = [0, 2, 0, 1, 2, 0]
    query, key, value, groups = batch(rows)
    out, weights = cascade_attention(
        Layer(), query, key, value, None, scaling=DIM**-0.5, prefix_groups=groups
    )
    assert weights is None and out.shape == (len(rows), WIDTH, HEADS, DIM)
    for row, p in enumerate(rows):
        expected = reference(query[row], key[row], value[row], groups.keys[0][p], groups.values[0][p])
        torch.testing.assert_close(out[row], expected, atol=1e-5, rtol=1e-5)


def test_a_row_gets_the_same_output_alone_and_among_16_sharing_its_prefix() -> None:
    query, key, value, groups = batch([1] * 16)
    grouped, _ = cascade_attention(Layer(), query, key, value, None, scaling=DIM**-0.5, prefix_groups=groups)
    none = torch.tensor([], dtype=torch.long)
    alone = PrefixGroups(groups.keys, groups.values, rows=[none, torch.tensor([0]), none])
    for row in (0, 7, 15):
        one = slice(row, row + 1)
        single, _ = cascade_attention(
            Layer(), query[one], key[one], value[one], None, scaling=DIM**-0.5, prefix_groups=alone
        )
        assert (single[0] - grouped[row]).abs().max().item() <= 1e-6


def test_without_prefix_groups_it_is_sdpa() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value, _ = batch([0, 1])
    got, _ = cascade_attention(Layer(), query, key, value, None, scaling=0.3)
    expected, _ = sdpa_attention_forward(Layer(), query, key, value, None, scaling=0.3)
    assert torch.equal(got, expected)
