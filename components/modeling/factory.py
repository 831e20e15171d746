"""Build, save and load InstructUE models.

A model folder holds `model.json` (config, dataset-dependent spec, backbone reference),
`trainable.safetensors` (everything not frozen in the backbone: new token rows, adapters, tabular
embedder, and LoRA/expert weights once training adds them) and `tokenizer/`. The backbone's base
weights are referenced, not copied: they are resolved again on load (alias, folder or hub id).
Loading never unpickles: JSON and safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import torch

from components.ingestion import DatasetCard, FeatureType, SourceKind, Split
from components.modeling.adapters import TabularSpec
from components.modeling.config import InputMode, ModelConfig
from components.modeling.lora import LoraSettings
from components.modeling.model import InstructUE, ModelSpec
from components.modeling.tmole import TMoLESettings

MODEL_FILE = "model.json"
WEIGHTS_FILE = "trainable.safetensors"
TOKENIZER_DIR = "tokenizer"


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def load_backbone(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.modeling.assets import refuse_unsafe_folder

    refuse_unsafe_folder(path)
    backbone = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return backbone.eval(), tokenizer


def load_encoder(config: ModelConfig, device: torch.device, cache_dir: Path | None):
    from components.modeling.assets import resolve_encoder
    from components.modeling.encoders import CachedEncoder, SentenceEncoder

    encoder = SentenceEncoder(
        resolve_encoder(config.encoder, cache_dir),
        device=str(device),
        batch_size=config.encoder_batch_size,
        trainable=config.encoder_trainable,
    )
    if config.encoder_trainable:
        return encoder  # its vectors change as it trains: nothing to cache
    return CachedEncoder(encoder, cache_dir / "encodings" if cache_dir else None)


def spec_for(card: DatasetCard, users: pd.DataFrame, encoder_dim: int | None) -> ModelSpec:
    """The model's shape for a dataset: sources from the card, tabular statistics from train users."""
    tabular_source = next((s.name for s in card.sources if s.kind is SourceKind.TABULAR), None)
    numeric = [f.name for f in card.features if f.type is FeatureType.NUMERIC]
    categorical = {f.name: f.categories for f in card.features if f.type is FeatureType.CATEGORICAL}
    train = users[users["split"] == Split.TRAIN.value] if "split" in users else users
    return ModelSpec(
        sources=[s.name for s in card.sources],
        tabular_source=tabular_source,
        tabular=TabularSpec.fit(train if len(train) else users, numeric, categorical),
        encoder_dim=encoder_dim,
    )


def build_model(
    card: DatasetCard, users: pd.DataFrame, config: ModelConfig | None = None, cache_dir: Path | None = None
) -> InstructUE:
    """A fresh (untrained) model for a dataset; backbone and encoder resolved offline."""
    from components.modeling.assets import default_cache_dir, resolve_backbone

    config = config or ModelConfig()
    cache_dir = cache_dir or default_cache_dir()
    device = pick_device(config.device)
    backbone, tokenizer = load_backbone(resolve_backbone(config.backbone, cache_dir))
    encoder = None
    if config.input_mode is InputMode.MULTI_ENCODER:
        encoder = load_encoder(config, device, cache_dir)
    spec = spec_for(card, users, encoder.dim if encoder else None)
    return InstructUE(backbone, tokenizer, spec, config, encoder).to(device)


DEFAULT_INIT_SEED = 0


def model_digest(folder: Path) -> str:
    """sha256 over a model folder's configuration and weights (not the tuned instructions an
    evaluation saves beside them): what an evaluation was of, and what registration checks."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(f"{folder} is not a model folder: {name} is missing")
        h.update(name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def build_seeded_model(
    card: DatasetCard,
    users: pd.DataFrame,
    config: ModelConfig | None = None,
    seed: int = DEFAULT_INIT_SEED,
    cache_dir: Path | None = None,
) -> InstructUE:
    """An untrained model whose random parts (adapters, token rows) are drawn from `seed`, without
    touching the caller's random state: the same command gives the same vectors on every call."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(card, users, config, cache_dir)


def trainable_state(model: InstructUE) -> dict[str, torch.Tensor]:
    """Every parameter outside the frozen backbone (adapters, token rows, a trainable encoder), plus
    backbone parameters that train (LoRA)."""
    named = dict(model.named_parameters())
    return {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("backbone.") or (k in named and named[k].requires_grad)
    }


def load_trainable(model: InstructUE, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load trainable weights; returns the keys the model needed but did not get (the frozen backbone's
    base weights are not expected, its LoRA/TMoLE weights are) and the keys it does not know."""
    from components.modeling.lora import ADAPTER_MARKS

    missing, unexpected = model.load_state_dict(state, strict=False)
    needed = [k for k in missing if not k.startswith("backbone.") or any(m in k for m in ADAPTER_MARKS)]
    return needed, list(unexpected)


def write_model_files(model: InstructUE, folder: Path) -> Path:
    """Write `model.json`, the trainable weights and the tokenizer into an existing folder."""
    from safetensors.torch import save_file

    # The folder records the precision its embeddings were made in, never "measure again": a
    # process that loads it (a scoring server, a batch job next week) must give the same vectors,
    # and a timing measurement can come out differently on a busy machine.
    config = model.config.model_copy(update={"bf16": model.uses_bf16()})
    meta = {"config": config.model_dump(mode="json"), "spec": model.spec.to_dict()}
    if model.lora is not None:
        meta["lora"] = model.lora.model_dump(mode="json")
    if model.tmole is not None:
        meta["tmole"] = model.tmole.settings.model_dump(mode="json")
    (folder / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    save_file(trainable_state(model), str(folder / WEIGHTS_FILE), metadata={"format": "instructue"})
    model.tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    return folder


def save_model(model: InstructUE, folder: Path) -> Path:
    """Write the model folder atomically (temp folder, then rename)."""
    from components.common import replace_dir, temp_sibling

    folder = Path(folder)
    tmp = temp_sibling(folder)
    try:
        write_model_files(model, tmp)
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


class ModelFolderError(FileNotFoundError):
    pass


def load_model(
    folder: Path, cache_dir: Path | None = None, device: str | None = None, **overrides
) -> InstructUE:
    """Load a model folder written by `save_model`; `overrides` replace config values (batch size...)."""
    from safetensors.torch import load_file

    from components.modeling.assets import default_cache_dir, refuse_unsafe_folder, resolve_backbone

    folder = Path(folder)
    if not (folder / MODEL_FILE).exists():
        raise ModelFolderError(f"{folder} is not a model folder: {MODEL_FILE} is missing")
    refuse_unsafe_folder(folder, pickles_allowed_beside_safetensors=False)
    meta = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    config = ModelConfig.model_validate(
        {**meta["config"], **overrides, **({"device": device} if device else {})}
    )
    spec = ModelSpec.from_dict(meta["spec"])
    cache_dir = cache_dir or default_cache_dir()
    dev = pick_device(config.device)
    backbone, _ = load_backbone(resolve_backbone(config.backbone, cache_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR, local_files_only=True)
    encoder = load_encoder(config, dev, cache_dir) if config.input_mode is InputMode.MULTI_ENCODER else None
    model = InstructUE(backbone, tokenizer, spec, config, encoder)
    if meta.get("lora"):
        model.add_lora(LoraSettings.model_validate(meta["lora"]))
    if meta.get("tmole"):
        model.add_tmole(TMoLESettings.model_validate(meta["tmole"]))
    state = load_file(str(folder / WEIGHTS_FILE))
    missing, unexpected = load_trainable(model, state)
    if missing or unexpected:
        raise ModelFolderError(
            f"{folder}: weights do not match the model (missing {missing}, unexpected {unexpected})"
        )
    return model.to(dev).eval()
