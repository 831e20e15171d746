"""Tuned instructions (InstructUE 3.3.3): the prototype loss (Eq. 6) on hand-made tensors, few-shot
selection, tuning on a tiny model (frozen model, one prefix pass, only the given labels read), and
the tuned-instruction file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.evaluation.tuning import (
    TunedInstruction,
    TuningSettings,
    few_shot,
    load_tuned,
    prototype_loss,
    save_tuned,
    tune_instruction,
    tuned_for,
)
from components.modeling.config import ModelConfig
from components.modeling.embed import UserEmbedder
from components.modeling.factory import build_model, load_model, save_model
from components.modeling.tmole import INSTRUCTION, UNIVERSAL, TMoLESettings
from components.modeling.tuned import TUNED_FILE
from tests.conftest import make_tables

pytestmark = pytest.mark.unit

TASK = "likes_x"
FIT = [1, 2, 3, 4, 5, 6, 7, 8]
LABELS = np.array([0, 1, 0, 1, 1, 0, 1, 0])
FAST = TuningSettings(steps=8, lr=0.05, temperature=0.1)


# -- Eq. 6 on hand-made tensors ---------------------------------------------------------------------
def test_prototype_loss_on_separated_classes():
    # prototypes (1, 0) and (0, 1); each user has cosine 1 to its own and 0 to the other
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    expected = math.log(1 + math.exp(-1 / tau))  # -log(e^{1/tau} / (e^{1/tau} + e^0))
    assert prototype_loss(u, torch.tensor([0, 0, 1, 1]), tau).item() == pytest.approx(expected, rel=1e-6)
    # label values do not matter, nor the embeddings' norms (cosine similarity)
    assert prototype_loss(5 * u, torch.tensor([7, 7, 3, 3]), tau).item() == pytest.approx(expected, rel=1e-6)


def test_prototype_loss_prototypes_are_class_means():
    # class 0: (1, 0) and (0, 1) -> p_0 = (0.5, 0.5), normalised (1, 1)/sqrt 2; class 1: (-1, 0)
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    tau = 1.0
    r = 1 / math.sqrt(2)
    # s(u_i, p_0), s(u_i, p_1) per user; the first column is the own class for users 1, 2
    sims = [(r, -1.0), (r, 0.0), (-r, 1.0)]
    own = [0, 0, 1]
    expected = -sum(
        s[o] / tau - math.log(sum(math.exp(x / tau) for x in s)) for s, o in zip(sims, own, strict=True)
    ) / len(sims)
    assert prototype_loss(u, torch.tensor([0, 0, 1]), tau).item() == pytest.approx(expected, rel=1e-6)


def test_prototype_loss_three_classes_and_gradients_through_prototypes():
    torch.manual_seed(0)
    u = torch.randn(9, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2] * 3)
    loss = prototype_loss(u, y, 0.1)
    loss.backward()
    assert loss.item() > 0 and u.grad.abs().sum() > 0
    # lower temperature sharpens: perfectly clustered users get a smaller loss at small tau
    clustered = torch.eye(3).repeat_interleave(3, 0)
    assert prototype_loss(clustered, torch.arange(3).repeat_interleave(3), 0.05) < 1e-6


def test_centring_lets_the_prototype_loss_see_classes_that_a_shared_direction_hides():
    # two classes that differ by a small direction on top of a large offset every user shares
    torch.manual_seed(0)
    shared = 30.0 * torch.nn.functional.normalize(torch.randn(1, 16), dim=-1)
    labels = torch.tensor([0] * 6 + [1] * 6)
    sign = (2.0 * labels - 1.0)[:, None]
    emb = shared + sign * torch.nn.functional.normalize(torch.ones(1, 16), dim=-1) + 0.1 * torch.randn(12, 16)
    raw = float(prototype_loss(emb, labels, temperature=0.1))
    centred = float(prototype_loss(emb, labels, temperature=0.1, centre=True))
    assert raw > math.log(2) - 0.1  # the cosines to both prototypes are nearly 1: about chance
    assert centred < 0.05


def test_prototype_loss_refuses_bad_inputs():
    u = torch.randn(4, 3)
    with pytest.raises(ValueError, match="two classes"):
        prototype_loss(u, torch.zeros(4, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        prototype_loss(u, torch.zeros(3, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        prototype_loss(u, torch.tensor([0, 1, 0, 1]), 0.0)


def test_few_shot_takes_at_most_n_per_class_reproducibly():
    labels = np.array([0] * 10 + [1] * 3)
    picked = few_shot(labels, 4, seed=1)
    assert (labels[picked] == 0).sum() == 4 and (labels[picked] == 1).sum() == 3
    np.testing.assert_array_equal(picked, few_shot(labels, 4, seed=1))
    assert not np.array_equal(picked, few_shot(labels, 4, seed=2))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        TuningSettings(temperature=0)
    with pytest.raises(ValueError, match="steps"):
        TuningSettings(steps=-1)


# -- tuning a tiny model ----------------------------------------------------------------------------
@pytest.fixture(params=["plain", "tmole"])
def setup(request, tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    torch.manual_seed(0)
    tables = make_tables(tiny_card)
    config = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder), batch_size=4, bf16=False)
    model = build_model(tiny_card, tables.users, config, cache_dir=tmp_path / "cache")
    if request.param == "tmole":
        model.add_tmole(
            TMoLESettings(r=2, alpha=4.0, task_dim=8, dropout=0.1, tasks=[UNIVERSAL, INSTRUCTION])
        )
        torch.manual_seed(3)
        for name, p in model.backbone.named_parameters():
            if "tmole_B" in name:
                p.data.normal_(std=0.5)
    model.train()  # tuning must switch dropout off itself and restore the mode
    return model, tiny_card, tables


def test_tuning_lowers_the_loss_and_leaves_the_model_as_it_was(setup):
    model, card, tables = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    tuned = tune_instruction(model, card, tables, TASK, FIT, LABELS, FAST)
    assert isinstance(tuned, TunedInstruction) and tuned.task == TASK
    assert tuned.init_text == card.task(TASK).instruction and tuned.route == INSTRUCTION
    assert tuned.n_users == len(FIT) and len(tuned.losses) == FAST.steps + 1
    assert tuned.losses[-1] < tuned.losses[0]
    init = model.instruction_embeddings(tuned.init_text)
    assert tuned.tokens.shape == init.shape and not tuned.tokens.requires_grad
    assert (tuned.tokens - init).abs().max() > 1e-3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training and all(p.grad is None for p in model.parameters())
    # the final loss is the loss of the returned tokens' embeddings
    model.eval()
    emb = torch.from_numpy(UserEmbedder(model, card, tables).embed(FIT, tuned))
    assert prototype_loss(emb, torch.from_numpy(LABELS), FAST.temperature).item() == pytest.approx(
        tuned.losses[-1], abs=1e-4
    )


def test_zero_steps_keep_the_manual_instruction(setup):
    model, card, tables = setup
    tuned = tune_instruction(model, card, tables, TASK, FIT, LABELS, TuningSettings(steps=0))
    torch.testing.assert_close(tuned.tokens, model.instruction_embeddings(card.task(TASK).instruction))
    model.eval()
    out = UserEmbedder(model, card, tables).embed_many(FIT, [card.task(TASK).instruction, tuned])
    np.testing.assert_allclose(out[tuned], out[card.task(TASK).instruction], atol=1e-6)


class Poisoned:
    """A labels table that fails on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"tune_instruction read the labels table ({name})")

    def __getitem__(self, key):
        raise AssertionError("tune_instruction read the labels table")


def test_only_the_given_labels_are_read(setup):
    model, card, tables = setup
    plain = tune_instruction(model, card, tables, TASK, FIT, LABELS, FAST)
    tables.labels = Poisoned()
    poisoned = tune_instruction(model, card, tables, TASK, FIT, LABELS, FAST)
    torch.testing.assert_close(plain.tokens, poisoned.tokens)
    # flipping the given labels changes the result: they are what the tokens are tuned on
    other = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    assert (
        tune_instruction(model, card, tables, TASK, FIT, other, FAST).tokens - plain.tokens
    ).abs().max() > 1e-4


@pytest.mark.parametrize("tuning_batch", [1, 64])
def test_the_user_block_runs_once_per_tuning_run(setup, monkeypatch, tuning_batch):
    from components.evaluation import tuning

    model, card, tables = setup
    monkeypatch.setattr(tuning, "TUNING_BATCH", tuning_batch)  # 1: the model's batches of 4 users
    prefix_calls, suffix_lengths = [], []
    prefix, suffixes = model.prefix, model.embed_suffixes
    monkeypatch.setattr(model, "prefix", lambda *a: prefix_calls.append(1) or prefix(*a))
    monkeypatch.setattr(
        model, "embed_suffixes", lambda p, s: suffix_lengths.append(sum(len(x) for x in s)) or suffixes(p, s)
    )
    tuned = tune_instruction(model, card, tables, TASK, FIT, LABELS, FAST)
    n_batches = math.ceil(len(FIT) / max(tuning_batch, model.config.batch_size))
    assert len(prefix_calls) == n_batches  # once, not once per step
    assert len(suffix_lengths) == n_batches * (FAST.steps + 1)
    assert set(suffix_lengths) == {len(tuned.tokens) + 1}  # a step runs the instruction and <USER> only


def test_bad_requests_are_refused(setup):
    model, card, tables = setup
    with pytest.raises(KeyError, match="no task 'nope'"):
        tune_instruction(model, card, tables, "nope", FIT, LABELS, FAST)
    with pytest.raises(ValueError, match="two classes"):
        tune_instruction(model, card, tables, TASK, FIT, np.zeros(8), FAST)
    with pytest.raises(ValueError, match="labels of shape"):
        tune_instruction(model, card, tables, TASK, FIT, LABELS[:3], FAST)
    with pytest.raises(ValueError, match="not in dataset"):
        tune_instruction(model, card, tables, TASK, [*FIT[:-1], 999], LABELS, FAST)


# -- the tuned-instruction file ---------------------------------------------------------------------
def test_save_and_load_round_trip_with_the_model_folder(setup, tmp_path):
    model, card, tables = setup
    model.eval()
    folder = save_model(model, tmp_path / "m")
    assert load_tuned(folder) == {}
    tuned = tune_instruction(model, card, tables, TASK, FIT, LABELS, FAST)
    churn = TunedInstruction("churns", torch.randn(3, model.dim), init_text="Will this user leave?")
    save_tuned(folder, [tuned, churn])
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.json",
        "tokenizer",
        "trainable.safetensors",
        TUNED_FILE,
    ]
    loaded = load_tuned(folder)
    assert sorted(loaded) == ["churns", TASK]
    got = loaded[TASK]
    torch.testing.assert_close(got.tokens, tuned.tokens, rtol=0, atol=0)
    assert (got.init_text, got.route, got.n_users) == (tuned.init_text, tuned.route, tuned.n_users)
    assert got.losses == pytest.approx(tuned.losses)
    # saving one task again replaces it and keeps the others
    again = TunedInstruction(TASK, torch.zeros(2, model.dim), init_text="x")
    save_tuned(folder, [again])
    assert load_tuned(folder)[TASK].tokens.shape == (2, model.dim) and "churns" in load_tuned(folder)
    with pytest.raises(ValueError, match="several tuned instructions"):
        save_tuned(folder, [again, again])
    # the folder still loads as a model, and a loaded model embeds the loaded instruction as before
    reloaded = load_model(folder, cache_dir=tmp_path / "cache")
    a = UserEmbedder(model, card, tables).embed(FIT, loaded["churns"])
    b = UserEmbedder(reloaded, card, tables).embed(FIT, load_tuned(folder)["churns"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(KeyError, match=r"no tuned instruction for task\(s\) \['nope'\]"):
        tuned_for(folder, ["churns", "nope"])
    assert [t.task for t in tuned_for(folder, ["churns"])] == ["churns"]
