"""The batcher's decisions as pure functions: when to wait, when a batch is full, which items form it,
and what a batch with shared prompts costs."""

from __future__ import annotations

import pytest

from app.batch_policy import Waiting, add_prefix_groups, batch_cost, choose_batch, idle_wait, is_full


def test_idle_wait_only_holds_dense_traffic_and_never_past_the_deadline():
    assert idle_wait(now=10.0, oldest_enqueued=10.0, arrival_gap=float("inf"), max_wait_s=0.002) == 0.0
    assert idle_wait(now=10.0, oldest_enqueued=10.0, arrival_gap=0.002, max_wait_s=0.002) == 0.0
    assert idle_wait(now=10.001, oldest_enqueued=10.0, arrival_gap=0.0005, max_wait_s=0.002) == pytest.approx(
        0.001
    )
    assert idle_wait(now=10.003, oldest_enqueued=10.0, arrival_gap=0.0005, max_wait_s=0.002) < 0


def test_a_batch_is_full_by_count_or_by_padded_tokens():
    assert is_full([1, 1, 1], max_batch_size=3, max_batch_tokens=100)
    assert not is_full([1, 1], max_batch_size=3, max_batch_tokens=100)
    assert is_full([10, 50], max_batch_size=64, max_batch_tokens=100)  # 2 x 50 padded tokens
    assert not is_full([10, 49], max_batch_size=64, max_batch_tokens=100)


def test_choose_batch_takes_the_oldest_and_its_nearest_neighbours_in_length():
    # Queue positions, oldest first; lengths 50 (oldest), 1, 51, 2, 52, 3.
    lengths = [50, 1, 51, 2, 52, 3]
    assert choose_batch(lengths, max_batch_size=3, max_batch_tokens=10**6, max_padding_ratio=1.0) == [0, 2, 4]
    # The item cap: the oldest plus the nearest one.
    assert choose_batch(lengths, max_batch_size=2, max_batch_tokens=10**6, max_padding_ratio=1.0) == [0, 2]
    # The token budget: 3 x 52 > 150, so only two of the long ones fit.
    assert choose_batch(lengths, max_batch_size=64, max_batch_tokens=150, max_padding_ratio=1.0) == [0, 2]
    # The padding bound: adding the short items to the long ones would be mostly padding.
    assert choose_batch(lengths, max_batch_size=64, max_batch_tokens=10**6, max_padding_ratio=0.1) == [
        0,
        2,
        4,
    ]
    assert choose_batch([], max_batch_size=4, max_batch_tokens=100, max_padding_ratio=1.0) == []


def test_choose_batch_prefers_the_neighbour_that_adds_less_padding():
    # Anchor 10: a 9 pads only itself by 1; an 12 would pad the anchor by 2. Then 12 costs 2 x 2 = 4
    # against the 5's 5, so 12 comes before 5.
    lengths = [10, 12, 9, 5]
    assert choose_batch(lengths, max_batch_size=2, max_batch_tokens=10**6, max_padding_ratio=1.0) == [0, 2]
    assert choose_batch(lengths, max_batch_size=3, max_batch_tokens=10**6, max_padding_ratio=1.0) == [0, 1, 2]
    assert choose_batch(lengths, max_batch_size=4, max_batch_tokens=10**6, max_padding_ratio=1.0) == [
        0,
        1,
        2,
        3,
    ]


def test_batch_cost_counts_each_distinct_prefix_once():
    whole = Waiting(10)
    a1, a2 = Waiting(100, prefix=90, key="a"), Waiting(95, prefix=90, key="a")
    b = Waiting(70, prefix=60, key="b")
    assert batch_cost([whole]) == 10
    assert batch_cost([a1, a2]) == 90 + 2 * 10  # the prefix once, suffixes padded to the longest
    assert batch_cost([whole, a1, a2, b]) == 10 + 2 * 90 + 3 * 10  # prefixes padded to the longest


def test_a_chosen_items_prefix_group_joins_the_batch_within_its_caps():
    queue = [
        Waiting(100, prefix=90, key="a"),
        Waiting(40),
        Waiting(105, prefix=90, key="a"),
        Waiting(100, prefix=90, key="b"),
        Waiting(101, prefix=90, key="a"),
    ]
    assert add_prefix_groups([0], queue, max_batch_size=8, max_batch_tokens=1000) == [0, 2, 4]
    assert add_prefix_groups([0], queue, max_batch_size=2, max_batch_tokens=1000) == [0, 2]
    # within 115 tokens: item 2 would cost 90 + 2 x 15 = 120 and stays out; item 4, 90 + 2 x 11 = 112
    assert add_prefix_groups([0], queue, max_batch_size=8, max_batch_tokens=115) == [0, 4]
    assert add_prefix_groups([1], queue, max_batch_size=8, max_batch_tokens=1000) == [1]  # no prefix
