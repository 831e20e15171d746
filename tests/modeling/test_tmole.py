"""TMoLE (RecFound Eq. 1-2) on tiny random models: masking, the stacked computation against a loop
over experts, per-sample routing, merge_into_base, prefix reuse per route, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.modeling.config import ModelConfig
from components.modeling.embed import UserEmbedder
from components.modeling.factory import build_model, load_model, save_model
from components.modeling.profile import build_profiles
from components.modeling.tmole import (
    INSTRUCTION,
    UNIVERSAL,
    Branch,
    TMoLE,
    TMoLELinear,
    TMoLESettings,
    merge_into_base,
    routed,
)
from tests.conftest import make_tables

pytestmark = pytest.mark.unit
TASKS = [UNIVERSAL, INSTRUCTION, "likes", "churn"]


def settings(**kw) -> TMoLESettings:
    return TMoLESettings(**{"r": 2, "alpha": 4.0, "task_dim": 8, "dropout": 0.0, "tasks": TASKS, **kw})


def randomise(module: nn.Module) -> None:
    """Trained-looking experts: B starts at zero, which would hide every mistake."""
    torch.manual_seed(3)
    for name, p in module.named_parameters():
        if "tmole_B" in name:
            p.data.normal_(std=0.5)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.o_proj = nn.Linear(6, 5), nn.Linear(5, 6)

    def forward(self, x):
        return self.o_proj(self.q_proj(x))


def toy(**kw):
    torch.manual_seed(0)
    net, tmole = Toy(), TMoLE(settings(targets=["q_proj", "o_proj"], **kw))
    assert tmole.wrap(net) == 2
    randomise(net)
    return net, tmole


def test_branch_masks_keep_each_branch_off_the_others_experts():
    net, tmole = toy(n_embedding=2, n_shared=1, n_generative=3)
    layer = net.q_proj
    emb = layer.gates(tmole.route([2, 3], Branch.EMBEDDING))
    gen = layer.gates(tmole.route([2, 3], Branch.GENERATIVE))
    assert torch.allclose(emb.sum(1), torch.ones(2)) and torch.allclose(gen.sum(1), torch.ones(2))
    assert (emb[:, 3:] == 0).all() and (emb[:, :3] > 0).all()  # generative experts masked
    assert (gen[:, :2] == 0).all() and (gen[:, 2:] > 0).all()  # embedding experts masked


def test_stacked_experts_equal_a_loop_over_experts():
    net, tmole = toy()
    layer: TMoLELinear = net.q_proj
    x = torch.randn(3, 4, 6)
    route = tmole.route([0, 2, 3], [Branch.EMBEDDING, Branch.GENERATIVE, Branch.EMBEDDING])
    v = layer.gates(route)
    expected = layer.base_layer(x).clone()
    for j in range(layer.n):
        A = layer.tmole_A[j * layer.r : (j + 1) * layer.r]  # (r, d_in)
        B = layer.tmole_B[:, j * layer.r : (j + 1) * layer.r]  # (d_out, r)
        expected += v[:, j, None, None] * (x @ A.T @ B.T) * layer.scaling
    with routed(tmole, route):
        got = layer(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_routing_is_per_sample():
    net, tmole = toy()
    x = torch.randn(2, 3, 6)
    with routed(tmole, tmole.route([2, 3], Branch.EMBEDDING)):
        both = net(x)
    with routed(tmole, tmole.route([2], Branch.EMBEDDING)):
        first = net(x[:1])
    with routed(tmole, tmole.route([3], Branch.EMBEDDING)):
        second = net(x[1:])
    assert torch.allclose(both, torch.cat([first, second]), atol=1e-6)
    with routed(tmole, tmole.route([3], Branch.EMBEDDING)):
        first_as_churn = net(x[:1])
    assert not torch.allclose(first, first_as_churn, atol=1e-3)  # the task changes the output


def test_untrained_experts_leave_the_base_output_and_a_missing_route_fails():
    torch.manual_seed(0)
    net = Toy()
    x = torch.randn(2, 3, 6)
    before = net(x)
    tmole = TMoLE(settings(targets=["q_proj", "o_proj"]))
    tmole.wrap(net)
    with routed(tmole, tmole.route([0, 1], Branch.EMBEDDING)):
        assert torch.allclose(net(x), before, atol=1e-6)
    with pytest.raises(RuntimeError, match="without a route"):
        net(x)


def test_merge_into_base_gives_the_routed_output():
    net, tmole = toy()
    x = torch.randn(2, 3, 6)
    with routed(tmole, tmole.route([3, 3], Branch.GENERATIVE)), torch.no_grad():
        routed_out = net(x)
    assert merge_into_base(net, task_id=3, branch=Branch.GENERATIVE) == 2
    assert isinstance(net.q_proj, nn.Linear) and not isinstance(net.q_proj, TMoLELinear)
    assert torch.allclose(net(x), routed_out, atol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="at least one expert"):
        TMoLESettings(n_embedding=0, n_shared=0, tasks=TASKS)
    with pytest.raises(ValueError, match="match no linear"):
        TMoLE(settings(targets=["nope"])).wrap(Toy())
    with pytest.raises(KeyError, match="registry"):
        settings().task_id("unknown")


@pytest.fixture
def model(tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    torch.manual_seed(0)
    tables = make_tables(tiny_card)
    config = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder), batch_size=4, bf16=False)
    net = build_model(tiny_card, tables.users, config, cache_dir=tmp_path / "cache")
    net.add_tmole(settings(router_layers=2))
    randomise(net.backbone)
    return net.eval(), tables


def test_only_experts_routers_and_the_task_table_train_in_the_backbone(model):
    net, _ = model
    trainable = [n for n, p in net.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("tmole_" in n for n in trainable)
    assert net.tmole.tmole_tasks.weight.requires_grad


def test_prefix_reuse_per_route_agrees_with_the_full_pass(model, tiny_card):
    net, tables = model
    ids = [1, 2, 3, 4]
    batch = net.batch(
        build_profiles(tiny_card, tables, ids), tables.users.set_index("user_id").loc[ids].reset_index()
    )
    instructions = [None, "Does this user like x?", "Will this user leave?"]
    with torch.inference_mode():
        cached = net.embed(batch, instructions)
        for instruction, got in zip(instructions, cached, strict=True):
            assert (got - net.embed_uncached(batch, instruction)).abs().max() < 1e-4
    assert (cached[0] - cached[1]).abs().max() > 1e-3


def test_a_tmole_model_saves_and_loads_with_its_registry(model, tiny_card, tmp_path):
    net, tables = model
    folder = save_model(net, tmp_path / "m")
    loaded = load_model(folder, tmp_path / "cache")
    assert loaded.tmole.settings.tasks == TASKS and loaded.tmole.settings.router_layers == 2
    a = UserEmbedder(net, tiny_card, tables).embed([1, 2, 3], "Does this user like x?")
    b = UserEmbedder(loaded, tiny_card, tables).embed([1, 2, 3], "Does this user like x?")
    assert abs(a - b).max() < 1e-5


def test_a_loaded_bf16_model_routes_and_merges_outside_autocast(model, tmp_path):
    """A loaded model's weights are all frozen, so the bf16 cast reaches every Linear it is allowed
    to: the routers must stay as they are, or the routing plot and the merge (both outside autocast)
    fail on mixed dtypes (the main command's evaluation did, 2026-12-07)."""
    from components.evaluation.plots import routing_similarity

    net, _ = model
    loaded = load_model(save_model(net, tmp_path / "m"), tmp_path / "cache")
    loaded.uses_bf16 = lambda: True  # whatever this host's measured precision default is
    for p in loaded.parameters():
        p.requires_grad_(False)
    assert loaded.frozen_weights_to_bf16() > 0
    routers = [m for n, m in loaded.backbone.named_modules() if n.endswith("tmole_router")]
    assert routers and all(p.dtype == torch.float32 for r in routers for p in r.parameters())
    sims = routing_similarity(loaded)
    assert sims["embedding"].shape == (len(TASKS), len(TASKS))
