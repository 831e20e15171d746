"""Sentence encoder and its text-hash cache, on tiny random BERTs with the MiniLM package's tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.modeling.assets import resolve_encoder
from components.modeling.encoders import (
    CachedEncoder,
    EncodingCache,
    SentenceEncoder,
    read_st_layout,
    text_key,
)

pytestmark = pytest.mark.unit

TEXTS = [
    'Rated "Star Wars (1977)" 5 out of 5 stars.',
    "Searched cheap flights to Lisbon.",
    "a",
    "Clicked a very long article title that goes on and on about the weather in several cities today.",
]

ST_MODES = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens"}


def make_tiny_encoder(folder: Path, seed: int, pooling: str | None = None, normalize: bool = True) -> Path:
    """A 2-layer random BERT; with `pooling`, also the sentence-transformers files that name it."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True)
    minilm = resolve_encoder()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    if pooling is not None:
        kinds = [("", "Transformer"), ("1_Pooling", "Pooling")] + [("2_Normalize", "Normalize")] * normalize
        modules = [
            {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
            for i, (path, kind) in enumerate(kinds)
        ]
        (folder / "modules.json").write_text(json.dumps(modules))
        (folder / "1_Pooling").mkdir()
        cfg = {f"pooling_mode_{m}": m == ST_MODES[pooling] for m in ST_MODES.values()}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **cfg}))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {
        "plain": make_tiny_encoder(root / "plain", seed=0),
        "other": make_tiny_encoder(root / "other", seed=1),
        "cls": make_tiny_encoder(root / "cls", seed=0, pooling="cls", normalize=False),
    }


@pytest.fixture(scope="module")
def encoder(folders) -> SentenceEncoder:
    return SentenceEncoder(folders["plain"], batch_size=2)


def test_encode_shape_dtype_and_unit_norm(encoder):
    v = encoder.encode(TEXTS)
    assert v.shape == (4, 32) and v.dtype == torch.float32 and encoder.dim == 32
    torch.testing.assert_close(v.norm(dim=1), torch.ones(4))
    assert encoder.encode([]).shape == (0, 32)
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_same_text_same_vector_whatever_its_batch(encoder):
    alone = encoder.encode([TEXTS[0]])[0]
    assert torch.equal(alone, encoder.encode([TEXTS[0]])[0])
    for batch_size in (1, 3, 64):
        encoder.batch_size = batch_size
        mixed = encoder.encode([TEXTS[3], TEXTS[0], TEXTS[2], TEXTS[1]])
        assert (mixed[1] - alone).abs().max() < 1e-5
    encoder.batch_size = 2


def test_pooling_and_normalisation_come_from_the_sentence_transformers_files(folders):
    assert read_st_layout(folders["plain"])[1:] == ("mean", True)  # no ST files: the defaults
    assert read_st_layout(folders["cls"])[1:] == ("cls", False)
    assert read_st_layout(resolve_encoder())[1:] == ("mean", True)  # the real MiniLM folder

    enc = SentenceEncoder(folders["cls"])
    batch = enc.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        by_hand = enc.model(**batch).last_hidden_state[:, 0]
    torch.testing.assert_close(enc.encode(TEXTS[:2]), by_hand, atol=1e-5, rtol=1e-5)

    plain = SentenceEncoder(folders["plain"])
    batch = plain.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = plain.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    by_hand = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(plain.encode(TEXTS[:2]), by_hand, atol=1e-5, rtol=1e-5)


def test_unsupported_sentence_transformers_module_is_refused(tmp_path):
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    )
    with pytest.raises(ValueError, match="Dense"):
        read_st_layout(tmp_path)


def test_identity_is_stable_and_tells_models_and_settings_apart(folders, encoder):
    again = SentenceEncoder(folders["plain"])
    other = SentenceEncoder(folders["other"])  # same config and tokenizer, other random weights
    assert again.identity == encoder.identity
    assert other.identity != encoder.identity
    assert SentenceEncoder(folders["plain"], max_length=64).identity != encoder.identity
    assert SentenceEncoder(folders["plain"], pooling="cls").identity != encoder.identity


def test_a_second_cached_encoder_reads_every_seen_text_from_disk(folders, tmp_path):
    first = SentenceEncoder(folders["plain"])
    direct = first.encode(TEXTS)
    v1 = CachedEncoder(first, tmp_path).encode(TEXTS)
    torch.testing.assert_close(v1, direct, atol=1e-5, rtol=1e-5)

    fresh = SentenceEncoder(folders["plain"])  # a new process would load the encoder again
    cached = CachedEncoder(fresh, tmp_path)
    v2 = cached.encode(list(reversed(TEXTS)))
    assert fresh.forward_texts == 0 and (cached.hits, cached.misses) == (4, 0)
    assert torch.equal(v2, v1.flip(0))

    cached.encode([TEXTS[0], "a new text"])
    assert fresh.forward_texts == 1 and (cached.hits, cached.misses) == (5, 1)
    assert len(cached.cache) == 5


def test_duplicates_in_one_call_are_encoded_once(encoder):
    before = encoder.forward_texts
    cached = CachedEncoder(encoder, None)
    v = cached.encode([TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[0]])
    assert encoder.forward_texts - before == 2 and cached.misses == 2
    assert torch.equal(v[0], v[2]) and torch.equal(v[0], v[3])
    assert cached.encode([]).shape == (0, 32)
    with pytest.raises(TypeError, match=r"texts\[1\] is float"):
        cached.encode(["x", float("nan")])


def test_another_model_gets_another_cache_file(folders, encoder, tmp_path):
    other = SentenceEncoder(folders["other"])
    a, b = CachedEncoder(encoder, tmp_path), CachedEncoder(other, tmp_path)
    a.encode(TEXTS[:1])
    before = other.forward_texts
    b.encode(TEXTS[:1])
    assert other.forward_texts == before + 1  # nothing read from the first model's file
    assert a.cache.path != b.cache.path
    assert sorted(p.name for p in (tmp_path / "encodings").glob("*.sqlite")) == sorted(
        [f"{encoder.identity[:16]}.sqlite", f"{other.identity[:16]}.sqlite"]
    )


def test_encoding_cache_roundtrip_and_first_write_wins(tmp_path):
    cache = EncodingCache(tmp_path, "ab" * 32, dim=3)
    k1, k2 = text_key("one"), text_key("two")
    assert len(k1) == 20 and cache.get_many([k1]) == {} and len(cache) == 0
    cache.put_many([(k1, np.array([1, 2, 3], dtype=np.float32))])
    cache.put_many([(k1, np.array([9, 9, 9], dtype=np.float32)), (k2, np.array([4, 5, 6]))])
    cache.close()

    reopened = EncodingCache(tmp_path, "ab" * 32, dim=3)
    got = reopened.get_many([k2, k1, text_key("three")])
    assert set(got) == {k1, k2} and len(reopened) == 2
    np.testing.assert_array_equal(got[k1], [1, 2, 3])
    assert got[k2].dtype == np.float32
    with pytest.raises(ValueError, match="3-wide"):
        reopened.put_many([(k1, np.zeros(4))])


def test_trainable_encoder_is_not_cached(folders, tmp_path):
    trainable = SentenceEncoder(folders["plain"], trainable=True)
    assert all(p.requires_grad for p in trainable.model.parameters())
    assert trainable.encode(TEXTS[:2]).requires_grad
    with pytest.raises(ValueError, match="trainable"):
        CachedEncoder(trainable, tmp_path)
