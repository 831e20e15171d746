"""Checkpoint pieces without pickle: optimizer state as tensors + JSON, RNG states, completeness."""

import random

import numpy as np
import pytest
import torch

from components.training.checkpoint import (
    STATE_FILE,
    complete_checkpoints,
    host_rng,
    latest_checkpoint,
    optimizer_state,
    optimizer_tensors,
    prune,
    rng_tensors,
    set_host_rng,
    set_rng_tensors,
    step_dir,
)
from components.training.data import Sampler, shard

pytestmark = pytest.mark.unit


def test_optimizer_state_round_trips_through_tensors_and_json():
    import json

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    for _ in range(3):
        net(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    tensors, groups = optimizer_tensors(opt.state_dict())
    groups = json.loads(json.dumps(groups))  # what the checkpoint file holds
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(net.state_dict())
    opt2 = torch.optim.AdamW(twin.parameters(), lr=0.5)
    opt2.load_state_dict(optimizer_state(tensors, groups))
    x = torch.randn(4, 3)
    for o, n in ((opt, net), (opt2, twin)):
        o.zero_grad()
        n(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(net.weight, twin.weight) and opt2.param_groups[0]["lr"] == 0.1


def test_rng_states_restore_the_same_draws():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    saved, host = rng_tensors(), host_rng()
    first = (torch.rand(3), random.random(), np.random.rand())
    set_rng_tensors(saved)
    set_host_rng(host)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_only_complete_checkpoints_count_and_prune_keeps_the_newest(tmp_path):
    for step in (5, 10, 15):
        step_dir(tmp_path, step).mkdir(parents=True)
        (step_dir(tmp_path, step) / STATE_FILE).write_text("{}")
    step_dir(tmp_path, 20).mkdir()  # killed before its state was written
    (tmp_path / "checkpoints" / ".step-00000025.partial").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000015"
    prune(tmp_path, keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000010", "step-00000015"]


def test_sampler_resumes_mid_epoch_and_reshuffles_each_epoch():
    a = Sampler(10, seed=3)
    first = a.take(7)
    b = Sampler(10, seed=3)
    b.load_state_dict(a.state_dict())
    assert a.take(8) == b.take(8)
    epoch0 = Sampler(10, 3).take(10)
    assert sorted(epoch0) == list(range(10)) and first == epoch0[:7]
    assert Sampler(10, 3).take(20)[10:] != epoch0
    with pytest.raises(ValueError, match="training data changed"):
        Sampler(11, 3).load_state_dict(a.state_dict())


def test_shard_splits_one_draw_across_processes_and_micro_batches():
    draw = list(range(12))
    assert shard(draw, micro_batch=3, accum=2, world=2, rank=0) == [[0, 1, 2], [6, 7, 8]]
    assert shard(draw, micro_batch=3, accum=2, world=2, rank=1) == [[3, 4, 5], [9, 10, 11]]
