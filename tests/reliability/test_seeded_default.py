"""The untrained default model is drawn from a fixed, recorded seed (issue 27): the same command gives
the same vectors, and the caller's random state is left alone."""

from __future__ import annotations

import pytest
import torch

from components.modeling.config import ModelConfig
from components.modeling.factory import build_seeded_model
from tests.conftest import make_tables

pytestmark = pytest.mark.unit


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def test_same_seed_same_weights_and_the_callers_rng_untouched(
    tiny_card, tiny_backbone, tiny_encoder, tmp_path
):
    users = make_tables(tiny_card).users
    config = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder))
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = _weights(build_seeded_model(tiny_card, users, config, seed=0, cache_dir=tmp_path))
    assert torch.equal(torch.rand(1), expected_next)  # the caller's stream goes on as if nothing ran
    torch.manual_seed(999)
    b = _weights(build_seeded_model(tiny_card, users, config, seed=0, cache_dir=tmp_path))
    c = _weights(build_seeded_model(tiny_card, users, config, seed=1, cache_dir=tmp_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
