"""Baselines probed beside the model, on the same users and splits (InstructUE Table 2's rows).

- `raw_backbone`: the untrained backbone over the text-only serialisation of the user (the model's
  `text_only` input: each source's profile events as text inside its boundary pair, the tabular
  features as "name: value" text), its last token's (`<USER>`) final hidden state. No adapters, no
  LoRA/TMoLE; the added special-token rows start at the mean base embedding (see `tokens.py`).
- `sentence_encoder`: the model's sentence encoder over the same text, the mean of its chunk
  embeddings (a chunk: `chunk_events` consecutive events of one source; the tabular text is one).
- `svd`: truncated SVD of the binary user x item matrix of the profile window (events before each
  user's cut-off; every user's window, no labels), the user factors U * S.
- `tabular`: the tabular features alone: one-hot categories and standardised numbers, with a
  missing-value indicator per numeric feature that has gaps.

Features are cached under `<cache_dir>/baselines/<name>-<key>/` (`features.npy` + `meta.json`, no
pickle, written atomically), the key hashing the data's files, the encoder or backbone identity and
the settings that change the numbers; a second evaluation of the same data reads them back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from components.ingestion import CARD_FILENAME, ContractTables, DatasetCard, FeatureType, Table, profile_mask

log = logging.getLogger(__name__)

CACHE_SUBDIR = "baselines"
FEATURES_FILE, META_FILE = "features.npy", "meta.json"
CACHE_VERSION = 1


class Baseline(StrEnum):
    RAW_BACKBONE = "raw_backbone"
    SENTENCE_ENCODER = "sentence_encoder"
    SVD = "svd"
    TABULAR = "tabular"


class BaselineSettings(BaseModel):
    """Which baselines run and how; the fields that change the numbers are part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: list[Baseline] = Field(default_factory=lambda: list(Baseline))
    text_tokens: int = Field(
        512, ge=16, description="raw backbone: most recent tokens kept per source's serialised text"
    )
    batch_size: int = Field(8, ge=1, description="raw backbone: users per forward pass")
    chunk_events: int = Field(1, ge=1, description="sentence encoder: events per chunk")
    svd_components: int = Field(64, ge=1)
    item_column: str | None = Field(
        None, description="events column naming the item; None: `item_id` if present, else `text`"
    )
    seed: int = 0


@dataclass
class BaselineFeatures:
    name: str
    user_ids: list[int]
    matrix: np.ndarray  # (n_users, dim) float32, rows in `user_ids` order
    seconds: float  # to compute, or to read back from the cache
    cached: bool


# -- the features themselves (pure functions of the data) -------------------------------------------
def tabular_features(card: DatasetCard, users: pd.DataFrame) -> np.ndarray:
    """(n, F) one-hot categories (the card's, else the data's; unknown -> all zeros) and standardised
    numbers (missing -> 0, plus a 0/1 missing indicator when the feature has gaps)."""
    cols: list[np.ndarray] = []
    for f in card.features:
        if f.type is FeatureType.NUMERIC:
            x = pd.to_numeric(users[f.name], errors="coerce").to_numpy(np.float64)
            ok = np.isfinite(x)
            mu = x[ok].mean() if ok.any() else 0.0
            sd = x[ok].std() if ok.sum() > 1 and x[ok].std() > 0 else 1.0
            cols.append(np.where(ok, (x - mu) / sd, 0.0))
            if not ok.all():
                cols.append((~ok).astype(np.float64))
        else:
            values = users[f.name].astype("string")
            known = f.categories or sorted(values.dropna().unique().tolist())
            cols.extend((values == c).fillna(False).to_numpy(np.float64) for c in known)
    if not cols:
        raise ValueError(f"dataset {card.name!r} declares no tabular features; drop the tabular baseline")
    return np.stack(cols, axis=1).astype(np.float32)


def svd_features(
    tables: ContractTables,
    user_ids: Sequence[int],
    n_components: int,
    item_column: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """User factors of a truncated SVD of the binary user x item matrix of the profile window.

    Every user's profile-window events (train and probe users; no labels, nothing after a cut-off)
    form the matrix; the factors (U * S) of `user_ids` are returned.
    """
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    ev = tables.events
    column = item_column or ("item_id" if "item_id" in ev.columns else "text")
    if column not in ev.columns:
        raise ValueError(f"events have no column {column!r} for the SVD baseline's items")
    ev = ev[profile_mask(ev, tables.cutoffs)]
    users = pd.Index(pd.unique(tables.users["user_id"].astype(np.int64)))
    rows = users.get_indexer(ev["user_id"].astype(np.int64))
    items, cols = np.unique(ev[column].astype(str).to_numpy(), return_inverse=True)
    keep = rows >= 0
    matrix = csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(len(users), len(items)))
    matrix.data[:] = 1.0  # repeated interactions count once
    k = min(n_components, min(matrix.shape) - 1)
    if k < 1:
        raise ValueError(f"the SVD baseline needs at least 2 users and 2 items, got {matrix.shape}")
    factors = TruncatedSVD(k, random_state=seed).fit_transform(matrix)
    where = users.get_indexer(pd.Index(np.asarray(user_ids, np.int64)))
    if (where < 0).any():
        raise ValueError(f"user(s) {np.asarray(user_ids)[where < 0][:10].tolist()} are not in users")
    return factors[where].astype(np.float32)


def tabular_text(users: pd.DataFrame, card: DatasetCard) -> list[str]:
    """Each user's tabular features as "name: value; ..." (the text-only input's tabular block)."""
    names = [f.name for f in card.features]

    def fmt(x) -> str:
        if isinstance(x, float | np.floating):
            return "unknown" if not np.isfinite(x) else f"{x:.4g}"
        return str(x)

    return ["; ".join(f"{n}: {fmt(row[n])}" for n in names) for _, row in users.iterrows()]


def text_chunks(
    card: DatasetCard,
    tables: ContractTables,
    user_ids: Sequence[int],
    max_events: int | None,
    chunk_events: int,
) -> list[list[str]]:
    """Per user: chunks of `chunk_events` profile events of one source, then the tabular text."""
    from components.modeling import build_profiles

    profiles = build_profiles(card, tables, list(user_ids), max_events)
    rows = tables.users.set_index("user_id").loc[list(user_ids)].reset_index()
    tab = tabular_text(rows, card) if card.features else [""] * len(rows)
    out = []
    for p, t in zip(profiles, tab, strict=True):
        chunks = []
        for events in p.events.values():
            chunks += ["\n".join(events[i : i + chunk_events]) for i in range(0, len(events), chunk_events)]
        out.append([*chunks, t] if t else chunks)
    return out


def sentence_encoder_features(chunks: list[list[str]], encoder) -> np.ndarray:
    """(n, dim) mean of each user's chunk vectors (`encoder.encode`: texts -> (n, dim) tensor)."""
    flat = [c for user in chunks for c in user]
    vectors = encoder.encode(flat).cpu().numpy() if flat else np.zeros((0, encoder.dim), np.float32)
    out = np.zeros((len(chunks), vectors.shape[1] if len(flat) else encoder.dim), np.float32)
    start = 0
    for i, user in enumerate(chunks):
        if user:
            out[i] = vectors[start : start + len(user)].mean(0)
        start += len(user)
    return out


def raw_backbone_features(
    card: DatasetCard,
    tables: ContractTables,
    user_ids: Sequence[int],
    model_config,
    settings: BaselineSettings,
    asset_cache: Path | None,
    progress: bool = False,
) -> np.ndarray:
    """The untrained backbone's `<USER>` state over the text-only input (see the module docstring)."""
    from components.modeling import RECIPE_SWITCHES, InputMode, Inputs, UserEmbedder, build_model

    # Every source, whatever input ablation the model has, and none of the model's recipe switches
    # (depth cut, summary tokens, read-out, training heads): the baseline is the backbone as shipped,
    # whichever model it is compared with.
    fields = type(model_config).model_fields
    config = model_config.model_copy(
        update={"input_mode": InputMode.TEXT_ONLY, "max_text_tokens": settings.text_tokens,
                "batch_size": settings.batch_size, "inputs": Inputs.BOTH,
                **{name: fields[name].default for name in (*RECIPE_SWITCHES, "pooling")}}
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # the special-token rows' init, the same every time
        torch.manual_seed(settings.seed)
        model = build_model(card, tables.users, config, cache_dir=asset_cache).eval()
    return UserEmbedder(model, card, tables).embed(list(user_ids), None, progress=progress)


# -- identities and the cache ------------------------------------------------------------------------
def data_fingerprint(data_dir: Path) -> str:
    """sha256 over the card and the users, events and cut-offs tables (labels do not change features)."""
    h = hashlib.sha256()
    for name in (CARD_FILENAME, Table.USERS.filename, Table.EVENTS.filename, Table.CUTOFFS.filename):
        file = Path(data_dir) / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; is {data_dir} an ingested dataset folder?")
        h.update(name.encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def model_identity(baseline: Baseline, model_config, asset_cache: Path | None) -> str:
    """What computes a baseline's features: the backbone's or the encoder's file identity."""
    from components.modeling import encoder_identity, read_st_layout

    if baseline is Baseline.RAW_BACKBONE:
        from components.modeling import resolve_backbone

        folder = resolve_backbone(model_config.backbone, asset_cache)
        return encoder_identity(folder, "last_token", True, 0)
    if baseline is Baseline.SENTENCE_ENCODER:
        from components.modeling import resolve_encoder

        folder, pooling, normalize = read_st_layout(resolve_encoder(model_config.encoder, asset_cache))
        return encoder_identity(folder, pooling, normalize, 128)
    return ""


def cache_key(baseline: Baseline, data_hash: str, identity: str, knobs: dict, user_ids: Sequence[int]) -> str:
    users = hashlib.sha256(np.asarray(user_ids, np.int64).tobytes()).hexdigest()
    payload = json.dumps(
        {"v": CACHE_VERSION, "baseline": str(baseline), "data": data_hash, "identity": identity,
         "knobs": knobs, "users": users}, sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


def _knobs(baseline: Baseline, settings: BaselineSettings, model_config) -> dict:
    """The settings that change a baseline's numbers."""
    if baseline is Baseline.RAW_BACKBONE:
        return {"text_tokens": settings.text_tokens, "max_events": model_config.max_events,
                "seed": settings.seed}  # fmt: skip
    if baseline is Baseline.SENTENCE_ENCODER:
        return {"chunk_events": settings.chunk_events, "max_events": model_config.max_events}
    if baseline is Baseline.SVD:
        return {"k": settings.svd_components, "item": settings.item_column, "seed": settings.seed}
    return {}


def read_cached(folder: Path, user_ids: Sequence[int]) -> np.ndarray | None:
    """The cached matrix if `folder` is a complete entry for exactly these users, else None."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        matrix = np.load(folder / FEATURES_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if meta.get("user_ids") != [int(u) for u in user_ids] or matrix.shape[0] != len(user_ids):
        return None
    return matrix


def write_cached(folder: Path, user_ids: Sequence[int], matrix: np.ndarray, meta: dict) -> None:
    """Write an entry atomically: a temp folder renamed into place."""
    from components.common import replace_dir, temp_sibling

    tmp = temp_sibling(folder)
    try:
        np.save(tmp / FEATURES_FILE, np.ascontiguousarray(matrix, np.float32), allow_pickle=False)
        body = {**meta, "user_ids": [int(u) for u in user_ids], "shape": list(matrix.shape)}
        (tmp / META_FILE).write_text(json.dumps(body) + "\n", encoding="utf-8")
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def compute_baselines(
    card: DatasetCard,
    tables: ContractTables,
    user_ids: Sequence[int],
    model_config,
    settings: BaselineSettings,
    data_hash: str,
    cache_dir: Path | None,
    asset_cache: Path | None = None,
    progress: bool = False,
) -> dict[str, BaselineFeatures]:
    """Every baseline of `settings.names` for `user_ids`, read from or written to the cache.

    Args:
        card, tables: the dataset.
        user_ids: the users (probe users), the rows' order.
        model_config: the evaluated model's `ModelConfig`: its backbone, encoder and `max_events`.
        settings: which baselines and how.
        data_hash: `data_fingerprint(data_dir)`.
        cache_dir: holds `baselines/`; None computes every time.
        asset_cache: where backbones and encoders resolve (`assets.default_cache_dir()` if None).
    """
    from components.modeling import default_cache_dir

    asset_cache = asset_cache or default_cache_dir()
    out = {}
    for baseline in settings.names:
        t0 = time.perf_counter()
        key = cache_key(baseline, data_hash, model_identity(baseline, model_config, asset_cache),
                        _knobs(baseline, settings, model_config), user_ids)  # fmt: skip
        folder = Path(cache_dir) / CACHE_SUBDIR / f"{baseline}-{key[:16]}" if cache_dir else None
        matrix = read_cached(folder, user_ids) if folder else None
        cached = matrix is not None
        if matrix is None:
            log.info("baseline %s: computing features of %d users", baseline, len(user_ids))
            matrix = _compute(baseline, card, tables, user_ids, model_config, settings, asset_cache, progress)
            if folder:
                write_cached(folder, user_ids, matrix, {"baseline": str(baseline), "key": key})
        out[str(baseline)] = BaselineFeatures(
            str(baseline), [int(u) for u in user_ids], matrix, time.perf_counter() - t0, cached
        )
    return out


def _compute(baseline, card, tables, user_ids, model_config, settings, asset_cache, progress) -> np.ndarray:
    if baseline is Baseline.TABULAR:
        rows = tables.users.set_index("user_id").loc[list(user_ids)].reset_index()
        return tabular_features(card, rows)
    if baseline is Baseline.SVD:
        return svd_features(tables, user_ids, settings.svd_components, settings.item_column, settings.seed)
    if baseline is Baseline.SENTENCE_ENCODER:
        from components.modeling import load_encoder, pick_device

        encoder = load_encoder(model_config, pick_device(model_config.device), asset_cache)
        chunks = text_chunks(card, tables, user_ids, model_config.max_events, settings.chunk_events)
        return sentence_encoder_features(chunks, encoder)
    return raw_backbone_features(card, tables, user_ids, model_config, settings, asset_cache, progress)
