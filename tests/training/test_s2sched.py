"""S2Sched (RecFound 4.3, Eq. 3-6) against hand-computed values and the behaviour the paper states:
"decreasing the sample ratio of a task if it is converging fast and vice versa"."""

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from components.training.s2sched import (
    S2Sched,
    S2SchedConfig,
    TaskPools,
    allocate,
    apply_floor,
    balancing_weight,
    build_scheduler,
    inter_task,
    intra_task,
    sample_ratios,
    slope,
)

pytestmark = pytest.mark.unit


def softmax(z):
    e = np.exp(np.asarray(z, float))
    return e / e.sum()


def linear(start, rate):
    return lambda s: start * (1 - rate * s)


def turns_up_at(turn, rate):
    """Falls at `rate` per step until `turn`, then rises at the same rate."""
    return lambda s: 1 - rate * s if s <= turn else 1 - rate * turn + rate * (s - turn)


def feed(sched, curves, steps, total=100, branch="embedding"):
    """Record every curve at every step; the ratios after each record, by step."""
    return {s: sched.record(branch, s, {t: f(s) for t, f in curves.items()}, total) for s in steps}


# -- the equations ---------------------------------------------------------------------------------


def test_slope_is_the_least_squares_line():
    # x mean 1.5, y mean 0.8; sum dx*dy = -1.5*.2 - .5*.1 - .5*.1 - 1.5*.2 = -0.7; sum dx^2 = 5
    assert slope([0, 1, 2, 3], [1.0, 0.9, 0.7, 0.6]) == pytest.approx(-0.14)
    # the same records taken every 10 steps: a slope per step, ten times smaller
    assert slope([0, 10, 20, 30], [1.0, 0.9, 0.7, 0.6]) == pytest.approx(-0.014)
    assert slope([5], [1.0]) == 0.0 and slope([], []) == 0.0
    assert slope([3, 3], [1.0, 2.0]) == 0.0


def test_inter_task_is_eq3():
    # sum|a| = 0.4; |T| a / sum|a| = 3 * [-.5, -.25, .25] = [-1.5, -0.75, 0.75]
    # e^z = [0.22313, 0.47237, 2.11700], sum 2.81250
    gamma = inter_task(np.array([-0.2, -0.1, 0.1]))
    np.testing.assert_allclose(gamma, [-0.0793353, -0.1679528, -0.7527120], atol=1e-7)
    # -gamma grows with the slope: the slower (or rising) task scores higher
    assert np.all(np.diff(-gamma) > 0)


def test_intra_task_is_eq4():
    # task 0: slopes -0.2, -0.1 -> sum|a| = 0.3, -2 * -0.1 / 0.3 = 0.66667
    # task 1: slopes  0.1,  0.3 -> sum|a| = 0.4, -2 *  0.3 / 0.4 = -1.5
    # e^z = [1.94773, 0.22313], sum 2.17086
    history = np.array([[-0.2, 0.1], [-0.1, 0.3]])
    np.testing.assert_allclose(intra_task(history[-1], history), [0.8972160, 0.1027840], atol=1e-7)


def test_intra_task_scores_a_steady_fall_the_same_whatever_its_speed():
    # -L a / (L |a|) = +1 for each: a task is compared with its own history only
    history = np.array([[-0.08, -0.01]] * 4)
    np.testing.assert_allclose(intra_task(history[-1], history), [0.5, 0.5])


def test_balancing_weight_is_eq5():
    # t = 2, sum max|a| = 0.4, tau = 1: -1 * 2 * [-0.2, -0.1] / 0.4 = [1.0, 0.5]
    # softmax[-1] = e^.5 / (e^1 + e^.5) = 1 / (1 + e^.5) = 0.377541; beta = 2 * 0.377541
    assert balancing_weight(np.array([-0.2, -0.1]), np.array([0.2, 0.2]), tau=1.0) == pytest.approx(0.7550813)
    # the largest slope jumps up: t = 3, sum = 0.8, tau = 10: -30 * [-.1, -.1, .2] / .8 = [3.75, 3.75, -7.5]
    # beta = 3 e^-7.5 / (2 e^3.75 + e^-7.5) = 1.95108e-5
    beta = balancing_weight(np.array([-0.1, -0.1, 0.2]), np.array([0.3, 0.3, 0.2]), tau=10.0)
    assert beta == pytest.approx(1.9510820e-5, rel=1e-6)
    # a steady history gives equal logits: t * (1 / t) = 1; a falling one is clipped to 1
    assert balancing_weight(np.full(5, -0.1), np.full(5, 0.3), tau=10.0) == pytest.approx(1.0)
    assert balancing_weight(np.array([0.2, -0.1, -0.1]), np.array([0.3, 0.3, 0.3]), tau=10.0) == 1.0


def test_sample_ratios_is_eq6():
    # beta = .5: -.5 * [-.25, -.75] + .5 * [.6, .4] = [0.425, 0.575]; softmax = 1 / (1 + e^.15), ...
    w = sample_ratios(np.array([-0.25, -0.75]), np.array([0.6, 0.4]), beta=0.5)
    np.testing.assert_allclose(w, [0.4625702, 0.5374298], atol=1e-7)
    assert w.sum() == pytest.approx(1.0)


def test_all_slopes_zero_give_uniform_ratios():
    a = np.zeros(3)
    w = sample_ratios(inter_task(a), intra_task(a, np.zeros((4, 3))), balancing_weight(a, a, tau=10.0))
    np.testing.assert_allclose(w, [1 / 3] * 3)


@pytest.mark.parametrize(
    "ratios, floor, expected",
    [
        ([0.5, 0.3, 0.2], 0.1, [0.5, 0.3, 0.2]),  # nothing under the floor: untouched
        # task 2 -> 0.05; the other 0.95 in proportion 0.90 : 0.09
        ([0.90, 0.09, 0.01], 0.05, [0.95 * 0.90 / 0.99, 0.95 * 0.09 / 0.99, 0.05]),
        # task 2 -> 0.05 pushes task 1 to 0.95 * 0.051 / 0.981 = 0.0494 < 0.05: both floored, task 0 0.90
        ([0.931, 0.051, 0.018], 0.05, [0.90, 0.05, 0.05]),
        ([0.6, 0.4, 0.0], 0.0, [0.6, 0.4, 0.0]),
    ],
)
def test_apply_floor(ratios, floor, expected):
    out = apply_floor(np.array(ratios), floor)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert out.sum() == pytest.approx(1.0) and out.min() >= floor - 1e-12


def test_apply_floor_rejects_an_infeasible_floor():
    with pytest.raises(ValueError, match="infeasible"):
        apply_floor(np.array([0.5, 0.3, 0.2]), 0.4)


def test_allocate_is_floor_then_largest_remainder():
    # 10 * [.26, .37, .37] = [2.6, 3.7, 3.7] -> floors [2, 3, 3] = 8; the 2 left go to remainders .7, .7
    assert allocate(10, np.array([0.26, 0.37, 0.37])).tolist() == [2, 4, 4]
    # three equal remainders 1/3: the one left goes to the first task
    assert allocate(10, np.full(3, 1 / 3)).tolist() == [4, 3, 3]
    # exact products stay exact (10 * 0.7 = 7.000000000000001, 10 * 0.1 = 1.0)
    assert allocate(10, np.array([0.2, 0.7, 0.1])).tolist() == [2, 7, 1]
    assert allocate(0, np.array([0.5, 0.5])).tolist() == [0, 0]


def test_allocate_always_sums_to_the_batch():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, b = rng.dirichlet(np.ones(rng.integers(1, 8))), int(rng.integers(0, 300))
        counts = allocate(b, w)
        assert counts.sum() == b and counts.min() >= 0
        assert np.all(np.abs(counts - b * w) < 1)


# -- the stated behaviour, through the scheduler ----------------------------------------------------


def test_a_faster_falling_loss_loses_share_and_a_slower_one_gains():
    sched = S2Sched({"embedding": ["fast", "mid", "slow"]}, window=4, tau=10.0, warmup_ratio=0.1)
    curves = {"fast": linear(1.0, 0.008), "mid": linear(1.0, 0.004), "slow": linear(1.0, 0.001)}
    r = feed(sched, curves, range(0, 65, 5))[60]
    assert r["fast"] < r["mid"] < r["slow"]
    # steady slopes: beta = 1 (Eq. 5) so w = Softmax(-gamma_inter) = Softmax(Softmax(3 a / 0.013))
    expected = softmax(softmax(3 * np.array([-0.008, -0.004, -0.001]) / 0.013))
    np.testing.assert_allclose(list(r.values()), expected, atol=1e-9)
    assert sched.snapshot("embedding")["slow"]["beta"] == pytest.approx(1.0)


def test_equal_slopes_give_equal_shares_whatever_the_loss_scale():
    # three times the loss, falling at the same relative rate: the normalised curves coincide
    sched = S2Sched({"generative": ["a", "b", "c"]}, window=4)
    curves = {"a": linear(1.0, 0.004), "b": linear(3.0, 0.004), "c": linear(0.2, 0.004)}
    for r in feed(sched, curves, range(0, 65, 5), branch="generative").values():
        np.testing.assert_allclose(list(r.values()), [1 / 3] * 3, atol=1e-9)


def test_a_loss_that_turns_upward_loses_share():
    sched = S2Sched({"embedding": ["fast", "slow", "turn"]}, window=4, tau=10.0, warmup_ratio=0.1)
    curves = {"fast": linear(1.0, 0.008), "slow": linear(1.0, 0.002), "turn": turns_up_at(30, 0.004)}
    ratios = feed(sched, curves, range(0, 80, 5))
    before, after = ratios[30], ratios[50]  # at 50 the 4-record window (35..50) is all past the turn
    assert before["fast"] < before["turn"] < before["slow"]  # falling at a middle rate: a middle share
    assert sched.snapshot("embedding")["turn"]["slope"] > 0
    assert after["turn"] < before["turn"]
    assert after["turn"] < min(after["fast"], after["slow"])
    assert after["turn"] < 1 / 3


def test_warm_up_keeps_uniform_ratios():
    sched = S2Sched({"embedding": ["fast", "slow"]}, window=4, warmup_ratio=0.5)
    curves = {"fast": linear(1.0, 0.008), "slow": linear(1.0, 0.001)}
    ratios = feed(sched, curves, range(0, 60, 5), total=100)
    for step in range(0, 50, 5):
        assert ratios[step] == {"fast": 0.5, "slow": 0.5}
    assert ratios[50]["fast"] < ratios[50]["slow"]  # step 50 = 0.5 * 100: scheduling starts


def test_the_floor_keeps_every_share():
    sched = S2Sched({"embedding": ["fast", "slow", "turn"]}, window=4, min_share=0.3)
    curves = {"fast": linear(1.0, 0.008), "slow": linear(1.0, 0.002), "turn": turns_up_at(30, 0.004)}
    ratios = feed(sched, curves, range(0, 80, 5))
    for r in ratios.values():
        assert min(r.values()) >= 0.3 - 1e-12 and sum(r.values()) == pytest.approx(1.0)
    assert ratios[50]["turn"] == pytest.approx(0.3)  # 0.244 without the floor


def test_counts_compose_the_batch_by_the_ratios():
    sched = S2Sched({"embedding": ["fast", "mid", "slow"]}, window=4)
    curves = {"fast": linear(1.0, 0.008), "mid": linear(1.0, 0.004), "slow": linear(1.0, 0.001)}
    feed(sched, curves, range(0, 65, 5))
    counts = sched.counts("embedding", 32)
    assert sum(counts.values()) == 32
    ratios = np.array(list(sched.ratios("embedding").values()))
    assert list(counts.values()) == allocate(32, ratios).tolist()
    assert counts["fast"] < counts["slow"]


def test_branches_are_scheduled_apart():
    sched = S2Sched({"embedding": ["e1", "e2"], "generative": ["g1", "g2"]}, window=4)
    feed(sched, {"e1": linear(1.0, 0.008), "e2": linear(1.0, 0.001)}, range(0, 40, 5))
    assert sched.ratios("generative") == {"g1": 0.5, "g2": 0.5}
    assert sched.ratios("embedding")["e1"] < 0.5


def test_record_rejects_bad_input():
    sched = S2Sched({"embedding": ["a", "b"]}, window=4)
    with pytest.raises(ValueError, match="losses are for"):
        sched.record("embedding", 0, {"a": 1.0}, 100)
    with pytest.raises(ValueError, match="finite and > 0"):
        sched.record("embedding", 0, {"a": 1.0, "b": 0.0}, 100)
    sched.record("embedding", 0, {"a": 1.0, "b": 2.0}, 100)
    with pytest.raises(ValueError, match="last record was at step 0"):
        sched.record("embedding", 0, {"a": 1.0, "b": 2.0}, 100)
    with pytest.raises(ValueError, match="must be finite"):
        sched.record("embedding", 5, {"a": math.nan, "b": 2.0}, 100)
    with pytest.raises(KeyError, match="no branch 'generative'"):
        sched.ratios("generative")
    with pytest.raises(ValueError, match="infeasible"):
        S2Sched({"embedding": ["a", "b", "c"]}, min_share=0.5)


# -- resume ----------------------------------------------------------------------------------------


def test_state_dict_round_trip_gives_identical_ratios():
    curves = {"fast": linear(1.0, 0.008), "slow": linear(1.0, 0.002), "turn": turns_up_at(30, 0.004)}

    def fresh():
        return S2Sched({"embedding": list(curves), "generative": ["g"]}, window=4)

    whole = fresh()
    expected = feed(whole, curves, range(0, 80, 5))
    first = fresh()
    feed(first, curves, range(0, 40, 5))
    state = json.loads(json.dumps(first.state_dict()))
    resumed = fresh()
    resumed.load_state_dict(state)
    assert feed(resumed, curves, range(40, 80, 5)) == {s: expected[s] for s in range(40, 80, 5)}
    assert resumed.snapshot("embedding") == whole.snapshot("embedding")
    with pytest.raises(ValueError, match="same task lists"):
        S2Sched({"embedding": ["fast", "slow"], "generative": ["g"]}).load_state_dict(state)


def test_snapshot_reports_loss_slope_and_ratio():
    sched = S2Sched({"embedding": ["a", "b"]}, window=4)
    feed(sched, {"a": linear(2.0, 0.01), "b": linear(1.0, 0.002)}, range(0, 30, 5))
    snap = sched.snapshot("embedding")
    assert snap["a"]["val_loss"] == pytest.approx(1 - 0.01 * 25)  # normalised by the step-0 loss
    assert snap["a"]["slope"] == pytest.approx(-0.01)
    assert snap["a"]["ratio"] + snap["b"]["ratio"] == pytest.approx(1.0)


# -- the pools -------------------------------------------------------------------------------------


def test_each_epoch_of_a_pool_is_drawn_without_replacement():
    pools = TaskPools({"a": range(100, 107), "b": range(200, 203)}, seed=3)
    first, second = pools.take("a", 7), pools.take("a", 7)
    assert sorted(first) == sorted(second) == list(range(100, 107))
    assert first != second  # a new permutation per epoch
    assert sorted(pools.take("b", 3)) == [200, 201, 202]


def test_compose_concatenates_in_task_order():
    pools = TaskPools({"a": range(0, 10), "b": range(10, 20), "c": range(20, 30)}, seed=0)
    batch = pools.compose({"c": 2, "a": 3})
    assert len(batch) == 5
    assert all(i < 10 for i in batch[:3]) and all(20 <= i < 30 for i in batch[3:])
    with pytest.raises(KeyError, match="does not hold"):
        pools.compose({"z": 1})


def test_pools_resume_draws_exactly_the_same():
    def fresh():
        return TaskPools({"a": range(7), "b": range(50, 55)}, seed=11)

    whole = fresh()
    [whole.compose({"a": 3, "b": 2}) for _ in range(4)]
    expected = [whole.compose({"a": 3, "b": 4}) for _ in range(6)]  # crosses epochs of both
    half = fresh()
    [half.compose({"a": 3, "b": 2}) for _ in range(4)]
    resumed = fresh()
    resumed.load_state_dict(json.loads(json.dumps(half.state_dict())))
    assert [resumed.compose({"a": 3, "b": 4}) for _ in range(6)] == expected
    with pytest.raises(ValueError, match="training data changed"):
        TaskPools({"a": range(8), "b": range(50, 55)}, seed=11).load_state_dict(half.state_dict())


def test_config_defaults_and_builder():
    config = S2SchedConfig()
    assert (config.window, config.tau, config.warmup_ratio, config.min_share) == (8, 10.0, 0.1, 0.02)
    with pytest.raises(ValidationError):
        S2SchedConfig(windw=4)
    sched = build_scheduler({"embedding": ["a", "b"]}, config.model_copy(update={"window": 3}))
    assert sched.window == 3 and sched.ratios("embedding") == {"a": 0.5, "b": 0.5}
