"""`instructue embed` on an ingested dataset with a saved tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from components.ingestion import ingest
from components.modeling.config import ModelConfig
from components.modeling.embed import read_embeddings
from components.modeling.factory import build_model, save_model
from flows.cli import app
from tests.conftest import as_raw, make_tables

pytestmark = pytest.mark.integration


def _ingested_model(card, backbone, encoder, root, **config):
    """data/tiny ingested under `root` and a tiny model built for it (seed 0): net, folder, tables."""
    tables = make_tables(card)
    ingest(as_raw(card, tables), root / "data", root / "q", progress=False)
    torch.manual_seed(0)
    config = ModelConfig(backbone=str(backbone), encoder=str(encoder), **config)
    net = build_model(card, tables.users, config, cache_dir=root / "cache").eval()
    return net, save_model(net, root / "m"), tables


def test_embed_writes_one_row_per_user_and_instruction(
    tiny_card, tiny_backbone, tiny_encoder, tmp_path, monkeypatch
):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(tmp_path / "cache"))
    _, folder, _ = _ingested_model(tiny_card, tiny_backbone, tiny_encoder, tmp_path)
    out = tmp_path / "emb.parquet"
    args = ["embed", "--dataset", "tiny", "--model", str(folder), "--root", str(tmp_path), "--task", "likes_x",
            "--universal", "--split", "probe", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    df = read_embeddings(out)
    assert len(df) == 2 * 8 and set(df["instruction"].dropna()) == {tiny_card.task("likes_x").instruction}
    assert np.stack(df["embedding"]).shape == (16, 32)

    missing = CliRunner().invoke(app, ["embed", "--dataset", "nope", "--root", str(tmp_path)])
    assert missing.exit_code == 2 and "run `instructue ingest` first" in missing.output
    bad_task = CliRunner().invoke(app, [*args[:7], "--task", "nope"])
    assert bad_task.exit_code == 2 and "has no task 'nope'" in bad_task.output


def test_embed_with_a_tuned_instruction_saved_in_the_model_folder(
    tiny_card, tiny_backbone, tiny_encoder, tmp_path, monkeypatch
):
    from components.modeling.embed import UserEmbedder
    from components.modeling.tuned import TunedInstruction, save_tuned

    monkeypatch.setenv("INSTRUCTUE_CACHE", str(tmp_path / "cache"))
    net, folder, tables = _ingested_model(tiny_card, tiny_backbone, tiny_encoder, tmp_path, bf16=False)
    tuned = TunedInstruction(
        "likes_x", torch.randn(4, net.dim), init_text=tiny_card.task("likes_x").instruction
    )
    save_tuned(folder, [tuned])
    out = tmp_path / "emb.parquet"
    args = ["embed", "--dataset", "tiny", "--model", str(folder), "--root", str(tmp_path), "--out", str(out),
            "--split", "probe"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--tuned", "likes_x", "--task", "likes_x"])
    assert result.exit_code == 0, result.output
    df = read_embeddings(out)
    assert set(df["instruction"]) == {"tuned:likes_x", tiny_card.task("likes_x").instruction}
    rows = df[df["instruction"] == "tuned:likes_x"]
    expected = UserEmbedder(net, tiny_card, tables).embed(rows["user_id"].tolist(), tuned)
    np.testing.assert_allclose(np.stack(rows["embedding"]), expected, atol=1e-5)

    missing = CliRunner().invoke(app, [*args, "--tuned", "churns"])
    assert missing.exit_code == 2 and "no tuned instruction for task(s) ['churns']" in missing.output
    default = CliRunner().invoke(app, [*args[:3], "--root", str(tmp_path), "--tuned", "likes_x"])
    assert default.exit_code == 2 and "--tuned needs --model" in default.output
