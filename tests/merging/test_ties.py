"""TIES on hand-made tensors: trimming, sign election, disjoint mean, identities."""

import pytest
import torch

from components.merging.ties import Order, disjoint_mean, elect_sign, ties_merge, ties_merge_state, trim

pytestmark = pytest.mark.unit


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def test_trim_keeps_exactly_the_top_share_by_magnitude():
    tau = t([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 1.0, -0.05, 0.4, 3.0])
    assert trim(tau, 0.3).tolist() == pytest.approx([0, -5.0, 0, 2.0, 0, 0, 0, 0, 0, 3.0])
    assert int((trim(tau, 0.5) != 0).sum()) == 5
    assert torch.equal(trim(tau, 1.0), tau)
    with pytest.raises(ValueError, match="density"):
        trim(tau, 0.0)


def test_elected_sign_is_the_sign_of_the_summed_mass():
    taus = torch.stack([t([1.0, -1.0, 0.5]), t([-3.0, -1.0, 0.2]), t([1.0, 4.0, -1.0])])
    # sums: -1, 2, -0.3
    assert elect_sign(taus).tolist() == [-1.0, 1.0, -1.0]


def test_disagreeing_entries_and_zeros_are_excluded_from_the_mean():
    taus = torch.stack([t([1.0, -1.0, 0.0]), t([-3.0, -2.0, 0.0]), t([2.0, 4.0, 0.0])])
    sign = t([1.0, -1.0, 1.0])
    assert disjoint_mean(taus, sign).tolist() == pytest.approx([1.5, -1.5, 0.0])


def test_merging_identical_checkpoints_returns_them():
    base = torch.randn(4, 5)
    tuned = base + torch.randn(4, 5)
    for order in Order:
        assert torch.allclose(ties_merge(base, [tuned, tuned, tuned], density=1.0, order=order), tuned)


def test_a_checkpoint_and_its_negation_cancel():
    base = torch.arange(9.0).view(3, 3) / 4  # dyadic values: the task vectors cancel exactly
    delta = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0], [2.0, 2.0, -0.5]])
    merged = ties_merge(base, [base + delta, base - delta], density=1.0)
    assert torch.allclose(merged, base)  # every entry's summed mass is zero: no sign, nothing kept


def test_trim_order_changes_the_elected_sign():
    base = t([0.0, 0.0])
    tuned = [t([0.1, 5.0]) + base, t([0.1, 5.0]), t([-0.5, 0.0])]
    # entry 0: untrimmed mass 0.1+0.1-0.5 < 0; with density 0.5 the two 0.1s are trimmed
    trim_first = ties_merge(base, tuned, density=0.5, order=Order.TRIM_FIRST)
    elect_first = ties_merge(base, tuned, density=0.5, order=Order.ELECT_FIRST)
    assert trim_first.tolist() == pytest.approx([-0.5, 5.0])
    assert elect_first.tolist() == pytest.approx([-0.5, 5.0])
    tuned = [t([0.3, 5.0]), t([0.3, 5.0]), t([-0.5, 0.0])]  # mass +0.1 untrimmed, -0.5 trimmed
    assert ties_merge(base, tuned, density=0.5, order=Order.TRIM_FIRST).tolist() == pytest.approx([-0.5, 5.0])
    assert ties_merge(base, tuned, density=0.5, order=Order.ELECT_FIRST).tolist() == pytest.approx([0.0, 5.0])


def test_state_dicts_merge_key_by_key_and_refuse_mismatches():
    base = {"a": torch.zeros(2), "b": torch.ones(2)}
    tuned = [{"a": t([1.0, 2.0]), "b": t([5.0, 5.0])}, {"a": t([3.0, 2.0]), "b": t([7.0, 7.0])}]
    merged = ties_merge_state(base, tuned, density=1.0, keys=["a"])
    assert merged["a"].tolist() == [2.0, 2.0] and merged["b"].tolist() == [7.0, 7.0]
    with pytest.raises(ValueError, match="keys"):
        ties_merge_state(base, [{"a": torch.zeros(2)}])


@pytest.mark.parametrize("order", list(Order))
def test_the_merge_equals_peft_ties_where_their_rules_agree(order):
    from peft.utils.merge_utils import ties

    torch.manual_seed(3)
    base = torch.randn(8, 10)
    tuned = [base + torch.randn(8, 10) for _ in range(3)]
    # density * n is an integer (peft floors it, we round) and no entry's summed mass is exactly 0
    taus = torch.stack([t - base for t in tuned])
    want = ties(taus, torch.ones(3), density=0.3, majority_sign_method="total")
    if order is Order.TRIM_FIRST:
        assert torch.allclose(ties_merge(base, tuned, density=0.3, order=order) - base, want, atol=1e-6)
    else:  # electing before trimming is RecFound's order, not peft's: it differs somewhere
        assert not torch.allclose(ties_merge(base, tuned, density=0.3, order=order) - base, want, atol=1e-6)


def test_a_small_tensor_keeps_one_entry_where_peft_would_keep_none():
    from peft.utils.merge_utils import magnitude_based_pruning

    bias = t([0.5, -2.0, 0.1, 0.3])
    assert int((magnitude_based_pruning(bias, 0.2) != 0).sum()) == 0
    assert trim(bias, 0.2).tolist() == [0.0, -2.0, 0.0, 0.0]
