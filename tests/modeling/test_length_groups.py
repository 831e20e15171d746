"""`inputs.length_groups`: the split of a padded batch into groups of similar length."""

from __future__ import annotations

import random

import pytest

from components.modeling.inputs import length_groups

pytestmark = pytest.mark.unit


def padded(lengths: list[int], groups: list[list[int]]) -> int:
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


@pytest.mark.parametrize("seed", range(20))
def test_groups_partition_the_batch_in_ascending_length_and_never_pad_more(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 24))]
    groups = length_groups(lengths, overhead=16)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(flat)  # contiguous runs of the sorted lengths, shortest group first
    assert padded(lengths, groups) + 16 * len(groups) <= len(lengths) * max(lengths) + 16


def test_the_overhead_trades_calls_for_padding():
    lengths = [62, 68, 88, 99, 102, 107, 118, 131]
    assert length_groups(lengths, overhead=10**6) == [list(range(8))]  # one call: plain padding
    assert len(length_groups(lengths, overhead=0)) == 8  # free calls: no padding at all
    some = length_groups(lengths, overhead=16)
    assert 1 < len(some) < 8 and padded(lengths, some) < 8 * 131


def test_equal_lengths_stay_one_group_and_empty_is_empty():
    assert length_groups([40] * 6) == [list(range(6))]
    assert length_groups([]) == []
