"""The quality recipe's model parts on tiny random models (issue 26): summary tokens, normalised
adapters, soft tokens held at the token rows' RMS, a cut backbone, answers through the encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.modeling.config import ModelConfig
from components.modeling.embed import UserEmbedder
from components.modeling.factory import build_model, load_model, save_model
from components.modeling.profile import build_profiles
from tests.conftest import make_tables

pytestmark = pytest.mark.unit

RECIPE = {"summary_tokens": True, "adapter_norm": True, "soft_token_rms": True}


@pytest.fixture
def make(tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    def _make(**overrides):
        torch.manual_seed(0)
        tables = make_tables(tiny_card)
        settings = {"batch_size": 4, "bf16": False, **overrides}
        config = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder), **settings)
        model = build_model(tiny_card, tables.users, config, cache_dir=tmp_path / "cache").eval()
        return model, tables

    return _make


def _batch(model, card, tables, ids):
    profiles = build_profiles(card, tables, ids, model.config.max_events)
    return model.batch(profiles, tables.users.set_index("user_id").loc[ids].reset_index())


def test_summary_token_is_the_mean_event_vector_through_its_adapter(make, tiny_card):
    model, tables = make(**RECIPE)
    ids = [3, 5]
    batch = _batch(model, tiny_card, tables, ids)
    soft = model.soft_tokens(batch)
    source = model.sequence_sources[0]
    vec = model.encoder.encode(batch.event_texts).float()
    for i in range(len(ids)):
        mine = [k for k, (u, s) in enumerate(zip(batch.event_user, batch.event_source, strict=True))
                if u == i and s == 0]  # fmt: skip
        want = model.summaries[source](vec[mine].mean(0, keepdim=True))[0]
        # the plan puts it right after the source's opening boundary
        row = batch.plan.codes[i]
        code = int(row[1])
        assert code < 0
        torch.testing.assert_close(soft[-code - 1], want.to(soft.dtype), rtol=1e-5, atol=1e-5)


def test_summary_tokens_keep_prefix_reuse_and_save_load(make, tiny_card, tmp_path):
    model, tables = make(**RECIPE, layers=1)
    embedder = UserEmbedder(model, tiny_card, tables)
    ids = [1, 2, 7]
    cached = embedder.embed_many(ids, [None, "Does this user like x?"])
    batch = _batch(model, tiny_card, tables, ids)
    with torch.no_grad():
        full = model.embed_uncached(batch, "Does this user like x?").numpy()
    np.testing.assert_allclose(cached["Does this user like x?"], full, atol=1e-4)
    folder = save_model(model, tmp_path / "m")
    loaded = load_model(folder, tmp_path / "cache")
    assert len(loaded.backbone.base_model.layers) == 1 and loaded.summaries
    again = UserEmbedder(loaded, tiny_card, tables).embed_many(ids, [None])
    np.testing.assert_allclose(again[None], cached[None], atol=1e-5)


def test_soft_tokens_stay_at_the_token_rows_rms_after_training_steps(make, tiny_card):
    model, tables = make(**RECIPE)
    rows = model.backbone.get_input_embeddings().weight.detach().float()
    target = float(rows.pow(2).mean().sqrt())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.05)
    batch = _batch(model, tiny_card, tables, [1, 2, 3, 4])
    for _ in range(5):  # push the adapters' outputs up as hard as a loss can
        loss = -model.soft_tokens(batch).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    soft = model.soft_tokens(batch).detach().float()
    rms = soft.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, target), rtol=1e-3, atol=1e-4)
    # without the norm, the same steps move the scale
    plain, _ = make(summary_tokens=True)
    opt = torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=0.05)
    for _ in range(5):
        loss = -plain.soft_tokens(batch).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(plain.soft_tokens(batch).detach().pow(2).mean().sqrt()) > 2 * target


def test_layers_cut_the_backbone_and_refuse_more_than_it_has(make):
    model, _ = make(layers=1)
    assert len(model.backbone.base_model.layers) == 1
    assert model.backbone.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="decoder layers"):
        make(layers=99)


def test_answer_encoder_embeds_answers_through_a_trainable_projection(make):
    model, _ = make(answer_encoder=True)
    out = model.embed_answers(["likes comedies", "rates harshly"])
    assert out.shape == (2, model.dim)
    assert all(p.requires_grad for p in model.answer_projection.parameters())
    plain, _ = make()
    with pytest.raises(RuntimeError, match="answer_encoder"):
        plain.embed_answers(["x"])


def test_mean_skip_serves_the_backbone_part_then_the_mean_event_vectors(make, tiny_card, tmp_path):
    model, tables = make(**RECIPE, mean_skip=True, pooling="mean")
    plain_dim, enc_dim = model.dim, model.spec.encoder_dim
    assert model.embedding_dim == plain_dim + len(model.sequence_sources) * enc_dim
    ids = [1, 2, 7]
    instruction = "Does this user like x?"
    cached = UserEmbedder(model, tiny_card, tables).embed_many(ids, [None, instruction])
    batch = _batch(model, tiny_card, tables, ids)
    with torch.no_grad():
        full = model.embed_uncached(batch, instruction).numpy()
    assert cached[instruction].shape == (3, model.embedding_dim)
    np.testing.assert_allclose(cached[instruction], full, atol=1e-4)  # prefix reuse keeps the skip
    # the tail is each user's plain mean of its event vectors per source, the same under every instruction
    vec = model.encoder.encode(batch.event_texts).float().numpy()
    users, sources = np.asarray(batch.event_user), np.asarray(batch.event_source)
    for i in range(len(ids)):
        for j in range(len(model.sequence_sources)):
            mine = vec[(users == i) & (sources == j)]
            want = mine.mean(0) if len(mine) else np.zeros(enc_dim)
            got = full[i, plain_dim + j * enc_dim : plain_dim + (j + 1) * enc_dim]
            np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(cached[None][:, plain_dim:], cached[instruction][:, plain_dim:], atol=1e-6)
    # the backbone's part is the unit-norm embedding the model serves without the skip
    np.testing.assert_allclose(np.linalg.norm(full[:, :plain_dim], axis=1), 1.0, atol=1e-5)
    folder = save_model(model, tmp_path / "m")
    loaded = load_model(folder, tmp_path / "cache")
    assert loaded.config.mean_skip and loaded.embedding_dim == model.embedding_dim


def test_mean_skip_refuses_inputs_without_event_vectors():
    with pytest.raises(ValueError, match="mean_skip"):
        ModelConfig(mean_skip=True, input_mode="text_only")
    with pytest.raises(ValueError, match="mean_skip"):
        ModelConfig(mean_skip=True, inputs="tabular")
