"""Tuned (soft) instructions in the embedding path on tiny random models: soft tokens equal to the
manual instruction's token embeddings reproduce the text instruction, prefix reuse equals the full
pass (values and gradients), TMoLE routes a tuned instruction as its manual text, mixed requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.modeling.config import ModelConfig, Pooling
from components.modeling.embed import UserEmbedder, read_embeddings, write_embeddings
from components.modeling.factory import build_model
from components.modeling.profile import build_profiles
from components.modeling.tmole import INSTRUCTION, UNIVERSAL, TMoLESettings
from components.modeling.tuned import TunedInstruction
from tests.conftest import make_tables

pytestmark = pytest.mark.unit

TEXT = "Does this user like x?"
IDS = [1, 2, 3, 4]


@pytest.fixture(params=["plain", "tmole"])
def make(request, tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    def _make(**overrides):
        torch.manual_seed(0)
        tables = make_tables(tiny_card)
        config = ModelConfig(
            backbone=str(tiny_backbone), encoder=str(tiny_encoder), batch_size=4, bf16=False, **overrides
        )
        model = build_model(tiny_card, tables.users, config, cache_dir=tmp_path / "cache")
        if request.param == "tmole":
            tasks = [UNIVERSAL, INSTRUCTION, "likes"]
            model.add_tmole(TMoLESettings(r=2, alpha=4.0, task_dim=8, dropout=0.0, tasks=tasks))
            torch.manual_seed(3)  # trained-looking experts: B starts at zero, which hides mistakes
            for name, p in model.backbone.named_parameters():
                if "tmole_B" in name:
                    p.data.normal_(std=0.5)
        model.eval()
        ids = IDS
        batch = model.batch(
            build_profiles(tiny_card, tables, ids), tables.users.set_index("user_id").loc[ids].reset_index()
        )
        return model, tables, batch

    return _make


def manual_as_tuned(model, text=TEXT, **kw) -> TunedInstruction:
    return TunedInstruction("likes_x", model.instruction_embeddings(text), init_text=text, **kw)


@pytest.mark.parametrize("pooling", [Pooling.USER_TOKEN, Pooling.MEAN])
def test_manual_token_embeddings_as_soft_tokens_give_the_text_embedding(make, pooling):
    model, _, batch = make(pooling=pooling)
    tuned = manual_as_tuned(model)
    with torch.inference_mode():
        text, soft = model.embed(batch, [TEXT, tuned])
        full = model.embed_uncached(batch, tuned)
    assert (text - soft).abs().max() < 1e-6
    assert (full - text).abs().max() < 1e-4


@pytest.mark.parametrize("pooling", [Pooling.USER_TOKEN, Pooling.MEAN])
def test_prefix_reuse_equals_the_full_pass_for_tuned_tokens(make, pooling):
    model, _, batch = make(pooling=pooling)
    torch.manual_seed(1)
    tuned = TunedInstruction("likes_x", torch.randn(5, model.dim) * 0.5, init_text=TEXT)
    instructions = [None, TEXT, tuned, "Will this user leave?"]
    with torch.inference_mode():
        cached = model.embed(batch, instructions)
        for instruction, got in zip(instructions, cached, strict=True):
            assert (got - model.embed_uncached(batch, instruction)).abs().max() < 1e-4
    assert (cached[1] - cached[2]).abs().max() > 1e-3  # the soft tokens matter


def test_gradients_through_the_cached_prefix_equal_those_of_the_full_pass(make):
    model, _, batch = make()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    target = torch.randn(len(IDS), model.dim)
    grads = []
    for cached in (True, False):
        tokens = model.instruction_embeddings(TEXT).requires_grad_(True)
        tuned = TunedInstruction("likes_x", tokens, init_text=TEXT)
        if cached:
            with torch.no_grad():
                prefix = model.prefix(batch, model.soft_tokens(batch), _route(model, batch, tuned))
            emb = model.embed_suffixes(prefix, [model.suffix_embeddings(tuned)])[0]
        else:
            emb = model.embed_uncached(batch, tuned)
        (emb * target).sum().backward()
        grads.append(tokens.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def _route(model, batch, instruction):
    if model.tmole is None:
        return None
    return model.route([model.inference_task(instruction)] * len(batch.plan.lengths))


def test_a_tuned_instruction_shares_the_manual_route_and_its_prefix(make, monkeypatch):
    model, _, batch = make()
    tuned = manual_as_tuned(model)
    assert model.inference_task(tuned) == model.inference_task(TEXT) == INSTRUCTION
    calls = []
    original = model.prefix
    monkeypatch.setattr(model, "prefix", lambda *a: calls.append(a[2]) or original(*a))
    with torch.inference_mode():
        model.embed(batch, [None, TEXT, tuned])
    # one block pass per route: universal and instruction with TMoLE, a single one without
    assert len(calls) == (2 if model.tmole is not None else 1)


@pytest.mark.parametrize("make", ["tmole"], indirect=True)  # routes exist only with TMoLE
def test_the_route_of_a_tuned_instruction_is_used(make):
    model, _, batch = make()
    as_instruction = manual_as_tuned(model)
    as_universal = manual_as_tuned(model, route=UNIVERSAL)
    with torch.inference_mode():
        a, b = model.embed(batch, [as_instruction, as_universal])
        assert (a - b).abs().max() > 1e-3
        assert (b - model.embed_uncached(batch, as_universal)).abs().max() < 1e-4


def test_tokens_of_another_width_are_refused(make):
    model, _, batch = make()
    wrong = TunedInstruction("likes_x", torch.zeros(3, model.dim + 1))
    with pytest.raises(ValueError, match=r"needs \(k, 32\)"), torch.inference_mode():
        model.embed(batch, [wrong])
    with pytest.raises(ValueError, match="non-empty"):
        TunedInstruction("likes_x", torch.zeros(0, model.dim))


def test_embed_many_mixes_texts_none_and_tuned_keyed_by_the_objects(make, tiny_card, tmp_path):
    model, tables, _ = make()
    tuned = manual_as_tuned(model)
    other = TunedInstruction("churns", torch.randn(4, model.dim), init_text="Will this user leave?")
    embedder = UserEmbedder(model, tiny_card, tables)
    out = embedder.embed_many(IDS, [None, TEXT, tuned, other])
    assert list(out) == [None, TEXT, tuned, other]
    np.testing.assert_allclose(out[tuned], out[TEXT], atol=1e-6)
    np.testing.assert_allclose(embedder.embed(IDS, other), out[other], atol=1e-5)
    df = read_embeddings(write_embeddings(tmp_path / "e.parquet", IDS, out))
    assert set(df["instruction"].dropna()) == {TEXT, "tuned:likes_x", "tuned:churns"}
