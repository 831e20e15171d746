"""`benchmarks/information_flow.py` on the tiny profile: every stage probed, the last layer's `<USER>`
state equal to the model's own universal embedding, the JSON and the plot written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.benchmarks import load_script

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def flow():
    return load_script("information_flow")


def test_every_stage_is_probed_and_written(flow, qa_data, model_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    out = tmp_path / "flow.json"
    assert flow.main(["--untrained", "--profile", "tiny", "--data", str(qa_data), "--dataset", "synthetic",
                      "--layers", "0,1,2", "--seeds", "0,1", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    stages = [r["stage"] for r in report["rows"]]
    assert {"encoder_mean", "soft_mean"} <= set(stages)
    assert {"layer_0/block_mean", "layer_1/user", "layer_2/user", "layer_2/block_mean"} <= set(stages)
    assert "layer_0/user" not in stages  # the <USER> token's own row: the same for every user
    for row in report["rows"]:
        assert 0.0 <= row["mean_auc"] <= 1.0 and len(row["per_task"]) >= 1
    assert out.with_suffix(".png").stat().st_size > 0
    assert "layer_2/user" in capsys.readouterr().out


def test_the_last_layer_user_state_is_the_universal_embedding(flow, qa_data, model_cache, monkeypatch):
    """The diagnostic reads the same pass the model embeds with: its last `<USER>` state is the
    embedding, and the block mean excludes the suffix (it differs from the `<USER>` state)."""
    from components.evaluation.evaluate import probe_user_ids
    from components.ingestion.contract import read_tables
    from components.modeling.embed import UserEmbedder
    from components.modeling.factory import build_model
    from components.training.config import load_profile

    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    card, tables = read_tables(qa_data)
    model = build_model(card, tables.users, load_profile("tiny").model).eval()
    ids = probe_user_ids(tables, [t.name for t in card.tasks])[:7]
    n = len(model.backbone.base_model.layers)
    vectors = flow.stage_vectors(model, card, tables, ids, [0, n], 3)
    assert vectors["embedding+soft_mean"].shape == (len(ids), 2 * model.dim)
    want = UserEmbedder(model, card, tables).embed(ids, None)
    np.testing.assert_allclose(vectors[f"layer_{n}/user"], want, atol=1e-5)
    assert vectors[f"layer_{n}/block_mean"].shape == want.shape
    assert not np.allclose(vectors[f"layer_{n}/block_mean"], want, atol=1e-3)
    # one vector per user, unit length, for every stage
    for X in vectors.values():
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
