"""Baseline features on the tiny contract tables: tabular one-hot and standardisation by hand, the
SVD sees the profile window only, the sentence-encoder mean over chunks, and the on-disk cache
(a hit on the second call, keyed by data and settings, no pickle)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import components.evaluation.baselines as B
from components.evaluation.baselines import (
    Baseline,
    BaselineSettings,
    compute_baselines,
    data_fingerprint,
    sentence_encoder_features,
    svd_features,
    tabular_features,
    text_chunks,
)

pytestmark = pytest.mark.unit


def test_tabular_features_one_hot_and_standardised(tiny_card):
    users = pd.DataFrame({"user_id": [1, 2, 3], "age_days": [0.0, 10.0, np.nan], "tier": ["a", "c", None]})
    X = tabular_features(tiny_card, users)
    # age: mean 5, std 5 over known values -> -1, 1, 0 (missing), then its missing flag; tier a, b, c
    expected = np.array([[-1, 0, 1, 0, 0], [1, 0, 0, 0, 1], [0, 1, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(X, expected)


def test_svd_uses_only_profile_window_events(tiny_tables):
    ids = tiny_tables.users["user_id"].tolist()
    before = svd_features(tiny_tables, ids, n_components=4)
    future = tiny_tables.events.groupby("user_id").cumcount() >= 4  # n_profile is 4 in the fixture
    changed = tiny_tables.events.copy()
    changed.loc[future, "text"] = "something else entirely"
    after = svd_features(
        type(tiny_tables)(tiny_tables.users, changed, tiny_tables.labels, tiny_tables.cutoffs), ids, 4
    )
    np.testing.assert_allclose(np.abs(before), np.abs(after), atol=1e-6)
    assert before.shape == (len(ids), 4)


class FakeEncoder:
    dim = 2

    def encode(self, texts):
        return torch.tensor([[len(t), 1.0] for t in texts])


def test_sentence_encoder_feature_is_the_mean_of_chunk_vectors(tiny_card, tiny_tables):
    chunks = text_chunks(tiny_card, tiny_tables, [1, 2], max_events=None, chunk_events=2)
    # four profile events (two per source) in chunks of two, then the tabular text
    assert len(chunks[0]) == 3 and chunks[0][-1].startswith("age_days: ")
    X = sentence_encoder_features(chunks, FakeEncoder())
    assert X[0, 0] == pytest.approx(np.mean([len(c) for c in chunks[0]])) and X[0, 1] == 1.0


@pytest.fixture
def dataset(tiny_card, tiny_tables, tmp_path):
    from components.ingestion import ingest
    from tests.conftest import as_raw

    ingest(as_raw(tiny_card, tiny_tables), tmp_path / "data", tmp_path / "q", progress=False)
    return tmp_path / "data" / "tiny"


def test_cache_hit_on_the_second_call_and_a_new_key_for_new_settings(tiny_card, tiny_tables, dataset, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    from components.modeling.config import ModelConfig

    calls = []
    real = B._compute

    def spy(baseline, *args):
        calls.append(baseline)
        return real(baseline, *args)

    monkeypatch.setattr(B, "_compute", spy)
    settings = BaselineSettings(names=[Baseline.TABULAR, Baseline.SVD], svd_components=3)
    ids = [1, 2, 3, 4, 5, 6]
    h = data_fingerprint(dataset)
    cfg = ModelConfig()
    first = compute_baselines(tiny_card, tiny_tables, ids, cfg, settings, h, tmp_path / "c", tmp_path / "a")
    second = compute_baselines(tiny_card, tiny_tables, ids, cfg, settings, h, tmp_path / "c", tmp_path / "a")
    assert calls == [Baseline.TABULAR, Baseline.SVD]
    assert not any(f.cached for f in first.values()) and all(f.cached for f in second.values())
    for name in first:
        np.testing.assert_array_equal(first[name].matrix, second[name].matrix)
    for file in (tmp_path / "c" / "baselines").glob("*/features.npy"):
        np.load(file, allow_pickle=False)
    other = BaselineSettings(names=[Baseline.SVD], svd_components=2)
    assert compute_baselines(tiny_card, tiny_tables, ids, cfg, other, h, tmp_path / "c", tmp_path / "a")[
        "svd"
    ].matrix.shape == (6, 2)
    assert calls[-1] == Baseline.SVD
    assert not list((tmp_path / "c" / "baselines").glob(".*"))  # no temp folders left behind


def test_data_fingerprint_changes_with_the_events(dataset):
    before = data_fingerprint(dataset)
    events = pd.read_parquet(dataset / "events.parquet")
    events.loc[0, "text"] = "changed"
    events.to_parquet(dataset / "events.parquet")
    assert data_fingerprint(dataset) != before


def test_raw_backbone_baseline_ignores_the_models_recipe_switches(tiny_card, tiny_tables, tiny_backbone,
                                                                  tiny_encoder, tmp_path):  # fmt: skip
    """The quick profile's recipe (a cut backbone, LiT answers, mean pooling) once made this baseline
    fail to build (text-only input has no sentence encoder for the answers); it must be the plain
    backbone's `<USER>` state whichever model it is compared with."""
    from components.evaluation.baselines import raw_backbone_features
    from components.modeling.config import ModelConfig

    plain = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder), bf16=False)
    recipe = plain.model_copy(update={"layers": 1, "summary_tokens": True, "adapter_norm": True,
                                      "soft_token_rms": True, "answer_encoder": True,
                                      "reconstruction_head": True, "pooling": "mean"})  # fmt: skip
    settings = BaselineSettings(names=[Baseline.RAW_BACKBONE], text_tokens=64, batch_size=4)
    ids = [1, 2, 3, 4]
    got = [raw_backbone_features(tiny_card, tiny_tables, ids, c, settings, tmp_path) for c in (plain, recipe)]
    assert got[0].shape[0] == 4
    np.testing.assert_allclose(got[0], got[1], rtol=1e-5, atol=1e-6)
