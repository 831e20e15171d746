"""The real default models (SmolLM2-135M-Instruct from the GGUF, all-MiniLM-L6-v2) on MovieLens users.

Slow: converts the GGUF on first use (about 20 s) and runs the 135M backbone on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from components.ingestion.movielens import build_tables, load_raw
from components.modeling.config import ModelConfig
from components.modeling.embed import UserEmbedder
from components.modeling.factory import build_model

pytestmark = pytest.mark.slow


def test_default_models_embed_movielens_users_with_and_without_instruction():
    from components.ingestion.card import load_bundled_card

    card, tables = load_bundled_card("movielens-100k"), build_tables(load_raw())
    model = build_model(card, tables.users, ModelConfig(max_events=32, bf16=False))
    assert model.dim == 576
    out = UserEmbedder(model, card, tables).embed_many([1, 2, 3], [None, card.tasks[3].instruction])
    universal, instructed = out[None], out[card.tasks[3].instruction]
    assert universal.shape == (3, 576) and np.isfinite(universal).all()
    assert np.abs(universal - instructed).max() > 1e-3
    assert not np.allclose(universal[0], universal[1])
