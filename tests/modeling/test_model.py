"""InstructUE on tiny random models: determinism, instructions, padding, prefix reuse, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.modeling.config import InputMode, ModelConfig, Pooling
from components.modeling.embed import UserEmbedder, read_embeddings, write_embeddings
from components.modeling.factory import build_model, load_model, save_model
from components.modeling.profile import build_profiles
from tests.conftest import make_tables

pytestmark = pytest.mark.unit

INSTRUCTIONS = ["Does this user like x?", "Will this user leave next month?"]


@pytest.fixture
def make(tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    def _make(**overrides):
        torch.manual_seed(0)
        tables = make_tables(tiny_card)
        # fp32: the comparisons below are exact to 1e-4, which bf16 is not meant to be
        settings = {"batch_size": 4, "bf16": False, **overrides}
        config = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder), **settings)
        model = build_model(tiny_card, tables.users, config, cache_dir=tmp_path / "cache").eval()
        return model, UserEmbedder(model, tiny_card, tables), tables

    return _make


def test_shape_order_dtype_and_norm(make):
    _, embedder, tables = make()
    ids = [5, 2, 9]
    x = embedder.embed(ids)
    assert x.shape == (3, 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embedder.embed([2])[0], x[1], atol=1e-5)  # users' order is kept


def test_same_input_same_embedding(make):
    _, embedder, _ = make()
    np.testing.assert_array_equal(embedder.embed([1, 2]), embedder.embed([1, 2]))


def test_instructions_change_the_embedding(make):
    _, embedder, _ = make()
    out = embedder.embed_many([3, 4], [None, *INSTRUCTIONS])
    for a, b in ((None, INSTRUCTIONS[0]), (INSTRUCTIONS[0], INSTRUCTIONS[1])):
        assert np.abs(out[a] - out[b]).max() > 1e-3


def test_alone_or_in_a_batch_of_longer_users_is_the_same(make, tiny_card):
    model, embedder, tables = make()
    # user 2 loses most of its events: shorter than everyone else in its batch
    ev = tables.events
    tables.events = ev[~((ev["user_id"] == 2) & (ev.groupby("user_id").cumcount() % 3 != 0))].reset_index(
        drop=True
    )
    tables.cutoffs.loc[tables.cutoffs["user_id"] == 2, "n_profile"] = 1
    embedder = UserEmbedder(model, tiny_card, tables)
    alone = embedder.embed([2], INSTRUCTIONS[0])
    batched = embedder.embed([7, 2, 8, 9], INSTRUCTIONS[0], batch_size=4)
    assert np.abs(alone[0] - batched[1]).max() < 1e-4


@pytest.mark.parametrize("pooling", [Pooling.USER_TOKEN, Pooling.MEAN])
@pytest.mark.parametrize("mode", [InputMode.MULTI_ENCODER, InputMode.TEXT_ONLY])
def test_prefix_reuse_agrees_with_the_full_pass(make, tiny_card, mode, pooling):
    model, _, tables = make(input_mode=mode, pooling=pooling)
    ids = [1, 2, 3, 4]
    profiles = build_profiles(tiny_card, tables, ids)
    batch = model.batch(profiles, tables.users.set_index("user_id").loc[ids].reset_index())
    with torch.inference_mode():
        cached = model.embed(batch, [None, *INSTRUCTIONS])
        for instruction, got in zip([None, *INSTRUCTIONS], cached, strict=True):
            full = model.embed_uncached(batch, instruction)
            assert (got - full).abs().max() < 1e-4


def test_user_without_events_in_a_source_still_embeds(make, tiny_card):
    model, _, tables = make()
    tables.events = tables.events[
        ~((tables.events["user_id"] == 3) & (tables.events["source"] == "searches"))
    ]
    x = UserEmbedder(model, tiny_card, tables).embed([3, 4])
    assert np.isfinite(x).all()


def test_profile_only_sees_the_profile_window(tiny_card):
    tables = make_tables(tiny_card)
    p = build_profiles(tiny_card, tables, [1], max_events=2)[0]
    # six events alternate clicks/searches; the first four are the profile; keep the 2 most recent
    assert p.events == {"clicks": ["event 1-0", "event 1-2"], "searches": ["event 1-1", "event 1-3"]}
    assert build_profiles(tiny_card, tables, [1], max_events=1)[0].events["clicks"] == ["event 1-2"]


def test_save_then_load_gives_identical_embeddings(make, tmp_path, tiny_card):
    model, embedder, tables = make()
    with torch.no_grad():  # make the trainable parts non-trivial before saving
        for p in model.adapters.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    before = embedder.embed_many([1, 2, 3], [None, INSTRUCTIONS[0]])
    folder = save_model(model, tmp_path / "model")
    assert {p.name for p in folder.iterdir()} == {"model.json", "trainable.safetensors", "tokenizer"}
    loaded = load_model(folder, cache_dir=tmp_path / "cache")
    after = UserEmbedder(loaded, tiny_card, tables).embed_many([1, 2, 3], [None, INSTRUCTIONS[0]])
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_backbone_is_frozen_and_new_parts_train(make):
    model, _, _ = make()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("backbone.") for n in trainable)
    assert "tokens.special" in trainable and any(n.startswith("adapters.clicks") for n in trainable)
    assert any(n.startswith("tabular.") for n in trainable)


def test_special_tokens_are_in_the_tokenizer(make):
    model, _, _ = make()
    vocab = model.tokenizer.get_vocab()
    for t in ("<USER>", "<clicks>", "</clicks>", "<searches>", "</searches>", "<tabular>", "</tabular>"):
        assert t in vocab
    assert model.tokenizer.tokenize("hello <USER>")[-1] == "<USER>"


def test_embeddings_parquet_round_trip(make, tmp_path):
    _, embedder, _ = make()
    out = embedder.embed_many([1, 2], [None, INSTRUCTIONS[0]])
    path = write_embeddings(tmp_path / "e.parquet", [1, 2], out)
    df = read_embeddings(path)
    assert len(df) == 4 and df["instruction"].isna().sum() == 2
    np.testing.assert_array_equal(np.stack(df["embedding"].iloc[:2]), out[None])


def test_second_run_encodes_no_text_already_seen(make, tiny_card, tmp_path):
    model, embedder, tables = make()
    encoder = model.encoder.encoder
    embedder.embed([1, 2, 3])
    seen = encoder.forward_texts
    assert seen > 0
    embedder.embed_many([1, 2, 3], [None, INSTRUCTIONS[0]])
    assert encoder.forward_texts == seen  # same process, same texts: all from the cache
    # a new model over the same cache folder (a later run) encodes nothing for these users either
    again, _, _ = make()
    UserEmbedder(again, tiny_card, tables).embed([1, 2, 3])
    assert again.encoder.encoder.forward_texts == 0
    UserEmbedder(again, tiny_card, tables).embed([4])
    assert again.encoder.encoder.forward_texts == 4  # user 4's four profile events are new


def test_prefix_reuse_with_eager_attention(make, tiny_card):
    """The 4D mask is boolean for SDPA and additive for the eager implementation: both must agree."""
    model, _, tables = make()
    model.backbone.set_attn_implementation("eager")
    assert model.backbone.config._attn_implementation == "eager"
    profiles = build_profiles(tiny_card, tables, [1, 2])
    batch = model.batch(profiles, tables.users.set_index("user_id").loc[[1, 2]].reset_index())
    with torch.inference_mode():
        for instruction, got in zip(
            [None, *INSTRUCTIONS], model.embed(batch, [None, *INSTRUCTIONS]), strict=True
        ):
            assert (got - model.embed_uncached(batch, instruction)).abs().max() < 1e-4


def soft_token_std(model, tables, tiny_card) -> float:
    """The event soft tokens' standard deviation per dimension, averaged over dimensions."""
    ids = tables.users["user_id"].astype(int).tolist()[:8]
    profiles = build_profiles(tiny_card, tables, ids)
    batch = model.batch(profiles, tables.users.set_index("user_id").loc[ids].reset_index())
    with torch.no_grad():
        soft = model.soft_tokens(batch)[: len(batch.event_texts)].float()
    return float(soft.std(0).mean())


def test_token_stats_init_gives_soft_tokens_the_spread_of_token_embeddings(make, tiny_card, tmp_path):
    plain, _, tables = make()
    matched, embedder, _ = make(adapter_init="token_stats")
    tok = matched.tokens.base.weight.float()
    want = float(tok.std(0).mean())
    got = soft_token_std(matched, tables, tiny_card)
    # matched, events spread as token embeddings do (their own similarity leaves them somewhat
    # closer than random vectors). With MiniLM's 384-dim unit vectors PyTorch's default init left the
    # spread at a fifth of the mean soft token's norm against 1.1 for tokens (README "Training");
    # the tiny encoder's 32 dims hide most of that collapse.
    assert want / 3 < got < want * 2, (got, want)
    assert got > soft_token_std(plain, tables, tiny_card)
    for name, adapter in matched.adapters.items():
        torch.testing.assert_close(adapter.net[2].bias.float(), tok.mean(0), msg=name)
    assert matched.config.model_dump()["adapter_init"] == "token_stats"
    assert "adapter_init" not in plain.config.model_dump()  # older model folders keep their bytes
    save_model(matched, tmp_path / "m")
    again = load_model(tmp_path / "m", tmp_path / "cache")
    assert again.config.adapter_init == "token_stats"
    reloaded = UserEmbedder(again.eval(), tiny_card, tables)
    np.testing.assert_allclose(reloaded.embed([1, 2, 3]), embedder.embed([1, 2, 3]), atol=1e-5)


@pytest.mark.parametrize("measured", [False, True])
def test_the_folder_records_the_measured_precision_and_loading_never_measures(
    make, tmp_path, monkeypatch, measured
):
    """A served model must give the vectors it was evaluated with: the load must not re-decide."""
    import json

    from components.modeling import model as model_module

    monkeypatch.setattr(model_module, "bf16_default", lambda device: measured)
    model, _, _ = make(bf16=None)
    folder = save_model(model, tmp_path / "model")
    assert json.loads((folder / "model.json").read_text())["config"]["bf16"] is measured

    def refuse(device):
        raise AssertionError("a loaded model measured the precision again")

    monkeypatch.setattr(model_module, "bf16_default", refuse)
    loaded = load_model(folder, cache_dir=tmp_path / "cache")
    assert loaded.uses_bf16() is measured
    assert load_model(folder, cache_dir=tmp_path / "cache", bf16=not measured).uses_bf16() is (not measured)


def test_grouped_decoding_equals_one_padded_pass(make, tiny_card):
    """`decode_padded` per length group: the same hidden states at every valid position as one
    padded pass, in the caller's row order, and zeros past each row's length."""
    model, _, tables = make()
    ids = [1, 2, 3, 4, 5, 6]
    batch = model.batch(
        build_profiles(tiny_card, tables, ids), tables.users.set_index("user_id").loc[ids].reset_index()
    )
    embeds = model.input_embeddings(batch.plan, model.soft_tokens(batch))
    lengths = batch.plan.lengths.clone()
    lengths[[1, 4]] -= torch.tensor([5, 9])  # uneven lengths: several groups
    with torch.no_grad():
        one = model.decode_padded(embeds, lengths, overhead=None)
        grouped = model.decode_padded(embeds, lengths, overhead=0)
    valid = torch.arange(embeds.shape[1])[None, :] < lengths[:, None]
    assert torch.allclose(one[valid], grouped[valid], atol=1e-5)
    assert grouped[~valid].abs().max() == 0
