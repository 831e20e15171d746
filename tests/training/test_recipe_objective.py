"""The quality recipe's training terms on tiny random models (issue 26): answers through the frozen
encoder and a learned projection (LiT), the input reconstruction loss."""

from __future__ import annotations

import math

import pytest
import torch

from components.training.config import load_profile
from components.training.data import task_name
from components.training.losses import reconstruction_loss

pytestmark = pytest.mark.integration

RECIPE = [
    "model.summary_tokens=true", "model.adapter_norm=true", "model.soft_token_rms=true",
    "model.answer_encoder=true", "model.reconstruction_head=true",
]  # fmt: skip


def _objective(qa_data, model_cache, alpha_rec: float, n: int):
    from components.ingestion.contract import read_tables
    from components.modeling.factory import build_model
    from components.modeling.profile import build_profiles
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings
    from components.training.trainer import add_tuner

    config = load_profile("tiny", [*RECIPE, "tuner=lora"])
    card, tables = read_tables(qa_data)
    examples = load_examples(qa_data, seed=0)
    batch, seen, users = [], set(), set()
    for e in examples:  # distinct answers and users: every row's positive is its own
        if e.answer not in seen and e.user_id not in users:
            batch.append(e)
            seen.add(e.answer)
            users.add(e.user_id)
        if len(batch) == n:
            break
    torch.manual_seed(0)
    model = add_tuner(build_model(card, tables.users, config.model, model_cache), config, examples)
    ids = sorted({e.user_id for e in batch})
    profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))
    settings = ObjectiveSettings(n_embedding=n, n_generative=0, margin=None, alpha_rec=alpha_rec, centre=True)
    return Objective(model, settings, profiles, tables.users).train(), batch


def test_the_lit_target_falls_below_chance_in_a_few_steps(qa_data, model_cache):
    """InfoNCE against answers embedded by the frozen encoder through the learned projection: on one
    batch of 8, the loss starts above chance and falls to less than half of it within 20 steps."""
    objective, batch = _objective(qa_data, model_cache, 0.0, 8)
    assert objective.model.answer_projection is not None
    tasks = [task_name(e) for e in batch]
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(20):
        terms = objective(batch, [], tasks, None).terms
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        losses.append(float(terms.cl.detach()))
    # chance: each user's own answer among the batch's answers and the other users (same_side)
    chance = math.log(2 * len(batch) - 1)
    assert losses[0] > chance
    assert min(losses[-3:]) < 0.5 * chance


def test_the_reconstruction_term_trains_the_heads_and_falls(qa_data, model_cache):
    objective, batch = _objective(qa_data, model_cache, 1.0, 8)
    tasks = [task_name(e) for e in batch]
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    first = objective(batch, [], tasks, None).terms
    assert first.rec is not None and "loss_rec" in first.detached()
    for _ in range(15):
        terms = objective(batch, [], tasks, None).terms
        opt.zero_grad()
        terms.total.backward()
        opt.step()
    heads = objective.model.reconstruction
    assert "events" in heads and all(p.grad is not None for p in heads.parameters())
    assert float(terms.rec.detach()) < 0.5 * float(first.rec.detach())


def test_reconstruction_loss_scores_centred_cosines():
    target = torch.randn(6, 5)
    assert float(reconstruction_loss(target * 3 + 7, target)) == pytest.approx(0.0, abs=1e-5)
    assert float(reconstruction_loss(-target, target)) == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="two"):
        reconstruction_loss(torch.zeros(3, 2), torch.zeros(3, 4))


def test_alpha_rec_needs_the_heads():
    with pytest.raises(ValueError, match="reconstruction_head"):
        load_profile("tiny", ["alpha_rec=1.0"])


def test_parameter_groups_take_their_own_lr_and_weight_decay():
    from torch import nn

    from components.training.param_groups import GroupSettings, ParamGroup, group_of, param_groups

    names = {
        "adapters.ratings.net.0.weight": ParamGroup.ADAPTERS,
        "summaries.ratings.net.2.bias": ParamGroup.ADAPTERS,
        "tokens.special": ParamGroup.TOKENS,
        "backbone.model.layers.0.self_attn.q_proj.tmole_A": ParamGroup.EXPERTS,
        "backbone.model.layers.0.self_attn.q_proj.lora_B.default.weight": ParamGroup.EXPERTS,
        "backbone.model.layers.0.self_attn.q_proj.tmole_router.weight": ParamGroup.ROUTER,
        "tmole.tmole_tasks.weight": ParamGroup.ROUTER,
        "answer_projection.1.weight": ParamGroup.HEADS,
        "reconstruction.events.weight": ParamGroup.HEADS,
    }
    assert {n: group_of(n) for n in names} == names
    named = [(n, nn.Parameter(torch.zeros(1))) for n in names]
    named.append(("frozen", nn.Parameter(torch.zeros(1), requires_grad=False)))
    groups = param_groups(named, {ParamGroup.EXPERTS: GroupSettings(lr=1e-4, weight_decay=0.1)}, 1e-3, 0.0)
    by = {g["name"]: g for g in groups}
    assert list(by) == [g.value for g in ParamGroup]
    assert by["experts"]["lr"] == 1e-4 and by["experts"]["weight_decay"] == 0.1
    assert by["adapters"]["lr"] == 1e-3 and by["adapters"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(names)  # the frozen one is left out
    config = load_profile("tiny", ["groups.experts.lr=1.0e-4"])
    assert config.groups[ParamGroup.EXPERTS].lr == 1e-4
