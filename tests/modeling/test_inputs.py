"""`model.inputs`: the user block without its tabular features or without its sequence sources
(InstructUE Table 3's input ablations), in both input modes, through save/load, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from components.ingestion.card import DatasetCard
from components.modeling.config import InputMode, Inputs, ModelConfig
from components.modeling.embed import UserEmbedder
from components.modeling.factory import build_model, load_model, save_model
from components.modeling.inputs import block_sources
from components.modeling.profile import build_profiles
from tests.conftest import TINY_CARD, make_tables

pytestmark = pytest.mark.unit

SOURCES = ["clicks", "searches", "tabular"]
SEQUENCE_TOKENS = ("<clicks>", "</clicks>", "<searches>", "</searches>")
TABULAR_TOKENS = ("<tabular>", "</tabular>")


@pytest.fixture
def make(tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    def _make(card=None, **overrides):
        card = card or tiny_card
        torch.manual_seed(0)
        tables = make_tables(tiny_card)
        settings = {"batch_size": 4, "bf16": False, **overrides}
        config = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder), **settings)
        model = build_model(card, tables.users, config, cache_dir=tmp_path / "cache").eval()
        return model, tables

    return _make


def plan_of(model, card, tables, ids):
    batch = model.batch(
        build_profiles(card, tables, ids), tables.users.set_index("user_id").loc[ids].reset_index()
    )
    return batch, [batch.plan.codes[i, : int(n)].tolist() for i, n in enumerate(batch.plan.lengths)]


@pytest.mark.parametrize(
    ("inputs", "want"),
    [(Inputs.BOTH, SOURCES), (Inputs.SEQUENCES, ["clicks", "searches"]), (Inputs.TABULAR, ["tabular"])],
)
def test_block_sources_keeps_card_order(inputs, want):
    assert block_sources(SOURCES, "tabular", inputs) == want
    assert block_sources(["a", "tab", "b"], "tab", Inputs.SEQUENCES) == ["a", "b"]


@pytest.mark.parametrize("mode", [InputMode.MULTI_ENCODER, InputMode.TEXT_ONLY])
def test_left_out_blocks_have_no_tokens_in_the_input(make, tiny_card, mode):
    ids = [1, 2, 3]
    plans = {}
    for inputs in Inputs:
        model, tables = make(input_mode=mode, inputs=inputs)
        batch, rows = plan_of(model, tiny_card, tables, ids)
        ids_of = {t: model.token_ids[t] for t in (*SEQUENCE_TOKENS, *TABULAR_TOKENS)}
        used = {t for t, i in ids_of.items() if any(i in r for r in rows)}
        plans[inputs] = rows
        if inputs is Inputs.BOTH:
            assert used == set(ids_of)
        elif inputs is Inputs.SEQUENCES:
            assert used == set(SEQUENCE_TOKENS)
        else:
            assert used == set(TABULAR_TOKENS)
            assert batch.event_texts == []  # no event reaches the encoder
    n_features = 2  # age_days, tier
    for i in range(len(ids)):
        both, seq, tab = (plans[x][i] for x in (Inputs.BOTH, Inputs.SEQUENCES, Inputs.TABULAR))
        if mode is InputMode.MULTI_ENCODER:
            assert len(seq) == len(both) - (n_features + 2)  # the tabular block: its soft tokens, its pair
            assert len(tab) == n_features + 2
            assert sum(c < 0 for c in seq) == 4  # the user's four profile events, one soft token each
        else:
            assert seq == both[: len(seq)] and tab == both[len(seq) :]  # card order: sequences first


def test_left_out_blocks_get_no_adapters_and_embeddings_still_work(make, tiny_card):
    for inputs, adapters, tabular in (
        (Inputs.SEQUENCES, {"clicks", "searches"}, False),
        (Inputs.TABULAR, {"tabular"}, True),
    ):
        model, tables = make(inputs=inputs)
        assert set(model.adapters) == adapters and (model.tabular is not None) is tabular
        x = UserEmbedder(model, tiny_card, tables).embed_many([1, 2, 3], [None, "Does this user like x?"])
        assert all(np.isfinite(v).all() and v.shape == (3, 32) for v in x.values())


@pytest.mark.parametrize("inputs", [Inputs.SEQUENCES, Inputs.TABULAR])
def test_the_switch_is_saved_and_restored(make, tiny_card, tmp_path, inputs):
    model, tables = make(inputs=inputs)
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    before = UserEmbedder(model, tiny_card, tables).embed([1, 2, 3])
    folder = save_model(model, tmp_path / "model")
    assert json.loads((folder / "model.json").read_text())["config"]["inputs"] == inputs.value
    loaded = load_model(folder, cache_dir=tmp_path / "cache")
    assert loaded.config.inputs is inputs and loaded.block_sources == model.block_sources
    np.testing.assert_array_equal(before, UserEmbedder(loaded, tiny_card, tables).embed([1, 2, 3]))


def test_the_default_is_left_out_of_saved_configs(make, tmp_path):
    # configs written before the switch existed have no `inputs`: theirs and today's default agree
    assert "inputs" not in ModelConfig().model_dump(mode="json")
    assert ModelConfig.model_validate(ModelConfig().model_dump()).inputs is Inputs.BOTH
    model, _ = make()
    folder = save_model(model, tmp_path / "model")
    assert "inputs" not in json.loads((folder / "model.json").read_text())["config"]
    assert load_model(folder, cache_dir=tmp_path / "cache").config.inputs is Inputs.BOTH


def test_an_unknown_value_is_a_clear_error():
    with pytest.raises(ValidationError, match="inputs"):
        ModelConfig(inputs="neither")


def test_tabular_only_without_a_tabular_source_is_a_clear_error(make):
    raw = {
        **TINY_CARD,
        "sources": [s for s in TINY_CARD["sources"] if s["kind"] != "tabular"],
        "features": [],
    }
    card = DatasetCard.model_validate(raw)
    make(card=card, inputs=Inputs.SEQUENCES)  # fine: the block keeps the sequence sources
    with pytest.raises(ValueError, match="model.inputs=tabular .* no tabular source: use model.inputs=both"):
        make(card=card, inputs=Inputs.TABULAR)


def test_profiles_take_the_switch_as_an_override():
    from components.training.config import ConfigError, load_profile

    assert load_profile("tiny", ["model.inputs=tabular"]).model.inputs is Inputs.TABULAR
    assert load_profile("quick", ["model.inputs=sequences"]).model.inputs is Inputs.SEQUENCES
    with pytest.raises(ConfigError, match="inputs"):
        load_profile("tiny", ["model.inputs=neither"])
