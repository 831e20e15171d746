"""The soft-token alignment stage (issue 26): only the sequence adapters move, the loss falls, the
result is cached by content and reused."""

from __future__ import annotations

import pytest
import torch

from components.modeling.config import ModelConfig
from components.modeling.factory import build_model
from components.modeling.profile import build_profiles
from components.modeling.tmole import TMoLESettings
from components.training.alignment import AlignmentSettings, align_cached, aligned_parameters, event_texts
from tests.conftest import make_tables

pytestmark = pytest.mark.unit

RECIPE = {"summary_tokens": True, "adapter_norm": True, "soft_token_rms": True}


@pytest.fixture
def setup(tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    torch.manual_seed(0)
    tables = make_tables(tiny_card)
    config = ModelConfig(
        backbone=str(tiny_backbone), encoder=str(tiny_encoder), batch_size=4, bf16=False, **RECIPE
    )
    model = build_model(tiny_card, tables.users, config, cache_dir=tmp_path / "assets")
    ids = sorted(tables.users["user_id"].astype(int))[:12]
    return model, build_profiles(tiny_card, tables, ids, None), tmp_path / "cache"


def _state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def test_alignment_trains_only_the_sequence_adapters_and_the_loss_falls(setup):
    model, profiles, cache = setup
    aligned = set(aligned_parameters(model))
    before = _state(model)
    got = align_cached(model, profiles, AlignmentSettings(steps=30, batch_events=16, lr=1e-2), cache)
    after = _state(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= aligned  # the backbone, token rows, summary adapters, heads: equal
    assert any(n.startswith("backbone.") for n in before)  # the check covered the backbone's tensors
    assert sum(got.losses[-5:]) < sum(got.losses[:5])
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_alignment_then_tmole_leaves_the_experts_as_initialised(setup):
    model, profiles, cache = setup
    align_cached(model, profiles, AlignmentSettings(steps=3, batch_events=8), cache)
    model.add_tmole(TMoLESettings(tasks=["universal", "instruction"], dropout=0.0))
    experts = {n: p.detach().clone() for n, p in model.named_parameters() if "tmole_" in n}
    assert experts and all(torch.count_nonzero(v) == 0 for n, v in experts.items() if "tmole_B" in n)


def test_the_same_alignment_is_read_from_the_cache(setup, tiny_card, tiny_backbone, tiny_encoder, tmp_path):
    model, profiles, cache = setup
    settings = AlignmentSettings(steps=5, batch_events=8)
    first = align_cached(model, profiles, settings, cache)
    weights = {n: p.detach().clone() for n, p in aligned_parameters(model).items()}
    torch.manual_seed(1)  # a differently initialised model ends with the same aligned adapters
    again = build_model(tiny_card, make_tables(tiny_card).users, model.config, cache_dir=tmp_path / "assets")
    second = align_cached(again, profiles, settings, cache)
    assert not first.cached and second.cached and second.key == first.key
    for n, p in aligned_parameters(again).items():
        torch.testing.assert_close(p, weights[n])
    other = align_cached(again, profiles, settings.model_copy(update={"steps": 6}), cache)
    assert not other.cached and other.key != first.key  # other settings, another entry


def test_event_texts_are_distinct_and_per_source(setup):
    model, profiles, _ = setup
    texts = event_texts(model, profiles)
    assert len(texts) == len(set(texts)) > 0
    assert {j for j, _ in texts} <= set(range(len(model.sequence_sources)))
