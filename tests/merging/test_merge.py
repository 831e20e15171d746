"""Merging factor pairs through their product, and a real tiny run merged into a loadable folder."""

import pytest
import torch

from components.merging.merge import factor_pairs, merge_run, merge_states

pytestmark = pytest.mark.unit


def lora_state(A, B):
    return {"x.q_proj.lora_A.default.weight": A, "x.q_proj.lora_B.default.weight": B, "bias": torch.zeros(2)}


def product(state):
    return state["x.q_proj.lora_B.default.weight"] @ state["x.q_proj.lora_A.default.weight"]


def test_factor_pairs_find_lora_and_tmole_layers():
    keys = ["a.lora_A.default.weight", "a.lora_B.default.weight", "b.tmole_A", "b.tmole_B", "c.weight"]
    assert factor_pairs(keys) == [
        ("a.lora_A.default.weight", "a.lora_B.default.weight"),
        ("b.tmole_A", "b.tmole_B"),
    ]


def test_identical_checkpoints_keep_their_delta():
    torch.manual_seed(0)
    initial = lora_state(torch.randn(2, 5), torch.zeros(4, 2))
    tuned = lora_state(torch.randn(2, 5), torch.randn(4, 2))
    merged, errors = merge_states(initial, [tuned, tuned], density=1.0)
    assert torch.allclose(product(merged), product(tuned), atol=1e-5)
    assert max(errors.values()) < 1e-5  # a rank-2 product refactors exactly at rank 2


def test_product_merge_differs_from_merging_factors_separately():
    # two checkpoints with the same delta written in different factor bases
    torch.manual_seed(1)
    A, B = torch.randn(2, 5), torch.randn(4, 2)
    R = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # swap the rank components
    initial = lora_state(torch.zeros(2, 5), torch.zeros(4, 2))
    one, two = lora_state(A, B), lora_state(R @ A, B @ R.T)
    assert torch.allclose(product(one), product(two), atol=1e-6)
    merged, _ = merge_states(initial, [one, two], density=1.0)
    assert torch.allclose(product(merged), product(one), atol=1e-4)
    naive = ((B + B @ R.T) / 2) @ ((A + R @ A) / 2)
    assert not torch.allclose(naive, product(one), atol=1e-2)


def test_tmole_experts_merge_block_by_block():
    torch.manual_seed(2)
    r, n = 2, 3
    init = {"p.tmole_A": torch.randn(n * r, 5), "p.tmole_B": torch.zeros(4, n * r)}
    tuned = {"p.tmole_A": torch.randn(n * r, 5), "p.tmole_B": torch.randn(4, n * r)}
    merged, errors = merge_states(init, [tuned, tuned], density=1.0, expert_rank={"p.tmole_A": r})
    for j in range(n):
        rows = slice(j * r, (j + 1) * r)
        want = tuned["p.tmole_B"][:, rows] @ tuned["p.tmole_A"][rows]
        got = merged["p.tmole_B"][:, rows] @ merged["p.tmole_A"][rows]
        assert torch.allclose(got, want, atol=1e-4)
    assert len(errors) == n


def test_a_full_rank_merge_stores_the_ties_result_exactly():
    from components.merging.ties import ties_merge

    torch.manual_seed(4)
    r, n = 2, 3
    init = {"p.tmole_A": torch.randn(n * r, 5), "p.tmole_B": torch.zeros(4, n * r)}
    tuned = [{"p.tmole_A": torch.randn(n * r, 5), "p.tmole_B": torch.randn(4, n * r)} for _ in range(3)]
    truncated, errors = merge_states(init, tuned, density=0.5, expert_rank={"p.tmole_A": r})
    full, full_errors = merge_states(init, tuned, density=0.5, expert_rank={"p.tmole_A": r}, rank=6)
    assert full["p.tmole_A"].shape == (n * 6, 5) and full["p.tmole_B"].shape == (4, n * 6)
    assert min(errors.values()) > 0.05  # trimming and sign masks make the TIES result full rank
    assert max(full_errors.values()) < 1e-5
    for j in range(n):
        block, wide = slice(j * r, (j + 1) * r), slice(j * 6, (j + 1) * 6)
        want = ties_merge(
            init["p.tmole_B"][:, block] @ init["p.tmole_A"][block],
            [c["p.tmole_B"][:, block] @ c["p.tmole_A"][block] for c in tuned],
            density=0.5,
        )
        got = full["p.tmole_B"][:, wide] @ full["p.tmole_A"][wide]
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.integration
def test_a_full_rank_merge_of_a_tiny_run_loads_with_the_same_layer_scale(qa_data, model_cache, tmp_path):
    import json

    from safetensors.torch import load_file

    from components.merging.merge import FULL, full_rank
    from components.merging.ties import ties_merge
    from components.modeling.factory import load_model
    from components.training.checkpoint import complete_checkpoints
    from components.training.config import load_profile
    from components.training.trainer import train

    config = load_profile("tiny", ["steps=4", "checkpoint_every=2", "keep_checkpoints=2", "tuner=tmole"])
    train(config, qa_data, tmp_path / "run", cache_dir=model_cache, progress=False)
    found = complete_checkpoints(tmp_path / "run")
    report = merge_run(tmp_path / "run", found, tmp_path / "merged", density=0.5, rank=FULL)
    assert report.max_truncation_error < 1e-5
    initial = load_file(str(tmp_path / "run" / "initial" / "trainable.safetensors"))
    states = [load_file(str(c / "trainable.safetensors")) for c in found]
    merged = load_file(str(tmp_path / "merged" / "trainable.safetensors"))
    before = json.loads((found[-1] / "model.json").read_text())["tmole"]
    after = json.loads((tmp_path / "merged" / "model.json").read_text())["tmole"]
    r, r_full = before["r"], full_rank(initial)
    assert after["r"] == r_full and after["alpha"] / r_full == pytest.approx(before["alpha"] / r)
    a_key = next(k for k in initial if k.endswith(".tmole_A"))
    b_key = a_key[: -len("A")] + "B"
    want = ties_merge(
        initial[b_key][:, :r] @ initial[a_key][:r], [s[b_key][:, :r] @ s[a_key][:r] for s in states], 0.5
    )
    assert torch.allclose(merged[b_key][:, :r_full] @ merged[a_key][:r_full], want, atol=1e-5)
    assert load_model(tmp_path / "merged", model_cache).tmole.settings.r == r_full


@pytest.mark.integration
def test_a_tiny_run_merges_into_a_loadable_model(qa_data, model_cache, tmp_path):
    from components.modeling.factory import load_model
    from components.training.checkpoint import complete_checkpoints
    from components.training.config import load_profile
    from components.training.trainer import train

    config = load_profile("tiny", ["steps=6", "checkpoint_every=2", "keep_checkpoints=3", "tuner=tmole"])
    train(config, qa_data, tmp_path / "run", cache_dir=model_cache, progress=False)
    found = complete_checkpoints(tmp_path / "run")
    report = merge_run(tmp_path / "run", found, tmp_path / "merged", density=0.5)
    assert report.factor_pairs > 0 and len(report.checkpoints) == 3
    model = load_model(tmp_path / "merged", model_cache)
    assert model.tmole is not None


def test_merge_cli_refuses_a_run_without_two_checkpoints(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["merge", "--run", str(tmp_path)])
    assert result.exit_code == 2 and "at least 2 checkpoints" in result.output
