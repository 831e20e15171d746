"""The losses of InstructUE Eq. 1-5 against hand-computed values on tiny tensors."""

import math

import pytest
import torch

from components.training.losses import (
    IGNORE,
    centre_groups,
    info_nce,
    joint_loss,
    margin_mask,
    next_token_loss,
    shift_labels,
)

pytestmark = pytest.mark.unit


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_shift_labels_moves_each_label_one_position_left():
    labels = torch.tensor([[IGNORE, IGNORE, 7, 8, IGNORE]])
    assert shift_labels(labels).tolist() == [[IGNORE, 7, 8, IGNORE, IGNORE]]


def test_next_token_loss_averages_over_answer_tokens_only():
    # three positions over a vocabulary of 2; the first predicts nothing (a profile position)
    logits = t([[[5.0, -5.0], [0.0, 0.0], [math.log(3.0), 0.0]]])
    labels = torch.tensor([[IGNORE, 1, 0]])
    # position 1: p(1) = 1/2; position 2: p(0) = 3/4
    expected = -(math.log(0.5) + math.log(0.75)) / 2
    assert next_token_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_next_token_loss_ignores_what_masked_positions_predict():
    labels = torch.tensor([[IGNORE, 1, 0]])
    a = t([[[5.0, -5.0], [0.0, 0.0], [1.0, 0.0]]])
    b = a.clone()
    b[0, 0] = t([-50.0, 50.0])  # a masked (profile / instruction / <USER>) position changes
    assert next_token_loss(a, labels).item() == pytest.approx(next_token_loss(b, labels).item())


def test_next_token_loss_without_labels_is_zero_and_differentiable():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    loss = next_token_loss(logits, torch.full((1, 2), IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


ORTHO_U, ORTHO_A = t([[1.0, 0.0], [0.0, 1.0]]), t([[1.0, 0.0], [0.0, 1.0]])


def test_info_nce_cross_side_only():
    # s(u_i, a_i) = 1, s(u_i, a_j) = 0: Z_i = e + 1
    loss = info_nce(ORTHO_U, ORTHO_A, temperature=1.0, margin=None, same_side=False)
    assert loss.item() == pytest.approx(math.log(math.e + 1) - 1, abs=1e-6)


def test_same_side_negatives_enter_the_partition_function():
    # Eq. 3: Z_i = e^1 + e^0 (u-a) + e^0 (u-u) + e^0 (a-a)
    loss = info_nce(ORTHO_U, ORTHO_A, temperature=1.0, margin=None, same_side=True)
    assert loss.item() == pytest.approx(math.log(math.e + 3) - 1, abs=1e-6)


def test_same_side_terms_change_the_loss_when_users_are_alike():
    u = t([[1.0, 0.0], [0.8, 0.6]])
    a = t([[0.6, 0.8], [0.0, 1.0]])
    plain = info_nce(u, a, temperature=0.5, margin=None, same_side=False).item()
    same = info_nce(u, a, temperature=0.5, margin=None, same_side=True).item()
    # by hand, temperature 0.5: s(u1,a1)=0.6, s(u1,a2)=0, s(u1,u2)=0.8, s(a1,a2)=0.8
    #                           s(u2,a2)=0.6, s(u2,a1)=0.96, s(u2,u1)=0.8, s(a2,a1)=0.8
    e = math.exp
    l1 = math.log(e(1.2) + e(0) + e(1.6) + e(1.6)) - 1.2
    l2 = math.log(e(1.2) + e(1.92) + e(1.6) + e(1.6)) - 1.2
    assert same == pytest.approx((l1 + l2) / 2, abs=1e-5)
    assert same > plain + 0.5


def test_margin_mask_removes_a_planted_false_negative():
    # user 1's positive scores 0.6; answer 2 scores 1.0 for user 1 (> 0.6 + 0.1): a false negative
    u = t([[1.0, 0.0], [0.0, 1.0]])
    a = t([[0.6, 0.8], [1.0, 0.0]])
    masked = info_nce(u, a, temperature=1.0, margin=0.1, same_side=False).item()
    unmasked = info_nce(u, a, temperature=1.0, margin=None, same_side=False).item()
    e = math.exp
    # user 1: Z = e^0.6 (the planted negative is dropped); user 2: positive s(u2,a2)=0,
    # negative s(u2,a1)=0.8 > 0 + 0.1, dropped too
    assert masked == pytest.approx(((math.log(e(0.6)) - 0.6) + (math.log(e(0)) - 0)) / 2, abs=1e-6)
    l1 = math.log(e(0.6) + e(1.0)) - 0.6
    l2 = math.log(e(0.0) + e(0.8)) - 0.0
    assert unmasked == pytest.approx((l1 + l2) / 2, abs=1e-6)


def test_margin_mask_keeps_negatives_within_the_margin():
    scores = t([[0.5, 0.65, 0.75]])
    positive = t([0.5])
    assert margin_mask(scores, positive, 0.2).tolist() == [[1.0, 1.0, 0.0]]
    assert margin_mask(scores, positive, None).tolist() == [[1.0, 1.0, 1.0]]


def test_known_positives_are_not_negatives():
    # identical answers for both users: each answer is the other's positive too
    u, a = ORTHO_U, t([[1.0, 1.0], [1.0, 1.0]])
    known = torch.ones(2, 2, dtype=torch.bool)
    loss = info_nce(u, a, temperature=1.0, margin=None, same_side=True, known_positive=known)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_info_nce_is_scale_free_and_checks_shapes():
    base = info_nce(ORTHO_U, ORTHO_A, temperature=0.1)
    assert info_nce(ORTHO_U * 7, ORTHO_A * 0.1, temperature=0.1).item() == pytest.approx(base.item())
    with pytest.raises(ValueError, match="must both be"):
        info_nce(ORTHO_U, ORTHO_A[:1])
    with pytest.raises(ValueError, match="temperature"):
        info_nce(ORTHO_U, ORTHO_A, temperature=0.0)


def test_a_gradient_step_lowers_the_loss():
    u = t([[1.0, 0.2], [0.1, 1.0], [0.7, 0.7]]).requires_grad_()
    a = t([[0.5, 1.0], [1.0, 0.3], [0.2, 0.9]])
    loss = info_nce(u, a, temperature=0.1, margin=0.1)
    loss.backward()
    after = info_nce(u.detach() - 0.01 * u.grad, a, temperature=0.1, margin=0.1)
    assert after.item() < loss.item()


def test_joint_loss_weights_and_keeps_terms():
    lm, cl = torch.tensor(2.0), torch.tensor(3.0)
    terms = joint_loss(lm, cl, alpha_lm=0.5, alpha_cl=2.0)
    assert terms.total.item() == pytest.approx(7.0)
    assert terms.detached() == {"loss": 7.0, "loss_lm": 2.0, "loss_cl": 3.0}
    assert joint_loss(None, cl).detached() == {"loss": 3.0, "loss_cl": 3.0}
    with pytest.raises(ValueError, match="both"):
        joint_loss(None, None)


def test_centre_groups_subtracts_each_groups_mean_and_leaves_a_lone_row():
    x = t([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [5.0, 5.0]])
    whole = centre_groups(x)
    assert torch.allclose(whole.sum(0), torch.zeros(2), atol=1e-6)
    grouped = centre_groups(x, ["a", "a", "b", "c"])
    assert grouped[:2].tolist() == [[-1.0, -1.0], [1.0, 1.0]]
    assert grouped[2:].tolist() == x[2:].tolist()  # groups of one row are left alone


def test_centring_lets_info_nce_see_pairs_that_a_shared_direction_hides():
    # every vector is a large shared offset plus a small part that marks its pair: cosines of the raw
    # vectors all sit near 1, so the loss is near its chance level; centred, the pairs are found
    torch.manual_seed(0)
    distinct = torch.nn.functional.normalize(torch.randn(8, 32), dim=-1)
    shared = 20.0 * torch.nn.functional.normalize(torch.randn(1, 32), dim=-1)
    users, answers = shared + distinct, shared + distinct + 0.05 * torch.randn(8, 32)
    raw = float(info_nce(users, answers, temperature=0.05, margin=None))
    centred = float(info_nce(centre_groups(users), centre_groups(answers), temperature=0.05, margin=None))
    assert raw > math.log(22) - 0.5  # B=8: 1 positive and 3 x 7 negatives, all alike
    assert centred < 0.5
