"""Source encoders: a frozen sentence encoder and a persistent cache of its vectors keyed by text hash.

The same event text recurs across many users ("Rated "Star Wars (1977)" 5 out of 5 stars."), so
each distinct text goes through the network once per encoder, ever; later runs read its vector
from an SQLite file named after the encoder's identity.

    from components.modeling.assets import resolve_encoder
    encoder = SentenceEncoder(resolve_encoder())
    vectors = CachedEncoder(encoder, cache_dir=default_cache_dir()).encode(texts)  # (n, dim) float32
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

POOLINGS = ("mean", "cls", "max", "mean_sqrt_len")
_ST_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
_ST_MODULES = ("Transformer", "Pooling", "Normalize")
_TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json")
# The identity hashes a sample of the weights, not all of them, so that opening a cache is instant.
_HEAD_BYTES, _BLOCK_BYTES, _N_BLOCKS = 1 << 20, 1 << 16, 16


def text_key(text: str) -> bytes:
    """The cache key of a text: sha1 of its UTF-8 bytes (20 bytes)."""
    return hashlib.sha1(text.encode("utf-8")).digest()


class SentenceEncoder:
    """A BERT-style encoder with sentence-transformers pooling, frozen unless `trainable`.

    Pooling and normalisation come from the folder's sentence-transformers files (`modules.json`,
    `1_Pooling/config.json`) when present; otherwise mean pooling followed by L2 normalisation.

    Args:
        path: a model folder with safetensors weights (see `assets.resolve_encoder`).
        device: where the network runs.
        batch_size: texts per forward pass.
        max_length: tokens kept per text; longer texts are truncated.
        trainable: leave the weights' requires_grad on and keep autograd in `encode`.
        pooling, normalize: override what the folder says.

    Raises:
        ValueError: the folder asks for a sentence-transformers module or pooling this class lacks.
    """

    def __init__(
        self,
        path: Path,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_length: int = 128,
        trainable: bool = False,
        pooling: str | None = None,
        normalize: bool | None = None,
    ):
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size ({batch_size}) and max_length ({max_length}) must be >= 1")
        self.path = Path(path)
        model_dir, st_pooling, st_normalize = read_st_layout(self.path)
        self.pooling = pooling or st_pooling
        self.normalize = st_normalize if normalize is None else normalize
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not one of {POOLINGS}")
        self.device = torch.device(device)
        self.batch_size, self.max_length, self.trainable = batch_size, max_length, trainable

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(
            model_dir, local_files_only=True, use_safetensors=True, dtype=torch.float32
        )
        self.model.to(self.device).eval().requires_grad_(trainable)
        max_positions = getattr(self.model.config, "max_position_embeddings", None)
        if max_positions is not None and max_length > max_positions:
            raise ValueError(
                f"max_length {max_length} exceeds the model's {max_positions} positions ({path})"
            )
        self.dim: int = self.model.config.hidden_size
        self.identity: str = encoder_identity(model_dir, self.pooling, self.normalize, max_length)
        self.forward_texts = 0

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Vectors of `texts` in their order, (n, dim) float32 on `device`.

        Texts are batched longest first so each batch pads little; a vector does not depend on
        which other texts share its batch beyond float rounding.
        """
        texts = _checked(texts)
        if not texts:
            return torch.zeros((0, self.dim), dtype=torch.float32, device=self.device)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        pieces = []
        with torch.inference_mode(not self.trainable):
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                vectors = pool(hidden, batch["attention_mask"], self.pooling).float()
                pieces.append(F.normalize(vectors, p=2, dim=-1) if self.normalize else vectors)
                self.forward_texts += len(idx)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return torch.cat(pieces)[inverse.to(self.device)]


def _checked(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__} ({texts[bad]!r}), not str")
    return texts


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence vectors (b, d) from token states (b, t, d) and an attention mask (b, t)."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    summed, count = (hidden * m).sum(dim=1), m.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return summed / count
    if mode == "mean_sqrt_len":
        return summed / count.sqrt()
    raise ValueError(f"pooling {mode!r} is not one of {POOLINGS}")


def read_st_layout(path: Path) -> tuple[Path, str, bool]:
    """(folder of the transformer, pooling, normalise) from a sentence-transformers folder's files.

    Without `modules.json`: `1_Pooling/config.json` if present, else mean pooling; normalised.
    """
    path = Path(path)
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        pooling_cfg = path / "1_Pooling" / "config.json"
        return path, _read_pooling(pooling_cfg) if pooling_cfg.is_file() else "mean", True
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    model_dir, pooling, normalize = path, "mean", False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _ST_MODULES:
            raise ValueError(
                f"{modules_file} lists a {module.get('type')!r} module; only {_ST_MODULES} are "
                "supported, so this encoder's vectors would be wrong. Pick another encoder."
            )
        sub = path / module.get("path", "")
        if kind == "Transformer":
            model_dir = sub
        elif kind == "Pooling":
            pooling = _read_pooling(sub / "config.json")
        else:
            normalize = True
    return model_dir, pooling, normalize


def _read_pooling(file: Path) -> str:
    cfg = json.loads(file.read_text(encoding="utf-8"))
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v is True]
    unknown = [k for k in modes if k not in _ST_POOLING_KEYS]
    if unknown or len(modes) != 1:
        raise ValueError(
            f"{file} asks for pooling {modes or 'none'}; exactly one of {list(_ST_POOLING_KEYS)} is "
            "supported. Pass `pooling=` to SentenceEncoder to choose one."
        )
    return _ST_POOLING_KEYS[modes[0]]


def encoder_identity(folder: Path, pooling: str, normalize: bool, max_length: int) -> str:
    """A sha256 naming what the encoder computes, cheap to get for a 100 MB checkpoint.

    Hashed: the settings, config.json and the tokenizer files, and per safetensors file its size,
    its header (names, shapes, dtypes, offsets) and a sample of its tensor bytes (the first MiB,
    16 blocks spread over the rest, the last block). Two checkpoints that differ only in bytes the
    sample skips would share an identity; save a changed encoder to a new folder to be safe.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    h.update(json.dumps([pooling, normalize, max_length]).encode())
    names = ["config.json", *_TOKENIZER_FILES, *sorted(p.name for p in folder.glob("tokenizer*"))]
    for name in names:
        file = folder / name
        if file.is_file():
            h.update(name.encode() + b"\0" + file.read_bytes())
    for file in sorted(folder.glob("*.safetensors")):
        size = file.stat().st_size
        h.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            h.update(f.read(header_len))
            start = 8 + header_len
            data_len = size - start
            if data_len <= _HEAD_BYTES + (_N_BLOCKS + 1) * _BLOCK_BYTES:
                h.update(f.read())
                continue
            h.update(f.read(_HEAD_BYTES))
            rest = data_len - _HEAD_BYTES - _BLOCK_BYTES
            for k in range(_N_BLOCKS + 1):
                f.seek(start + _HEAD_BYTES + rest * k // _N_BLOCKS)
                h.update(f.read(_BLOCK_BYTES))
    return h.hexdigest()


class EncodingCache:
    """Vectors of one encoder on disk: `<cache_dir>/encodings/<identity[:16]>.sqlite`.

    One table `vec(key BLOB PRIMARY KEY, v BLOB)`: key = `text_key(text)`, v = float32 bytes. WAL
    mode lets several processes read and write the file at once; `INSERT OR IGNORE` makes a second
    writer of the same text harmless (both computed the same vector).
    """

    _CHUNK = 500  # bound parameters per query, below SQLite's limit

    def __init__(self, cache_dir: Path, identity: str, dim: int):
        self.path = Path(cache_dir) / "encodings" / f"{identity[:16]}.sqlite"
        self.dim = dim
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork; a child process opens its own.
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vec (key BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
            )
            conn.commit()
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The cached vectors among `keys` (missing keys are absent from the result)."""
        found: dict[bytes, np.ndarray] = {}
        keys = list(keys)
        with self._lock:
            conn = self._connection()
            for start in range(0, len(keys), self._CHUNK):
                chunk = keys[start : start + self._CHUNK]
                query = f"SELECT key, v FROM vec WHERE key IN ({','.join('?' * len(chunk))})"
                for key, blob in conn.execute(query, chunk):
                    if len(blob) != 4 * self.dim:
                        raise RuntimeError(
                            f"{self.path} holds a {len(blob) // 4}-wide vector, expected {self.dim}; "
                            "the file is damaged: delete it and the vectors will be recomputed."
                        )
                    found[bytes(key)] = np.frombuffer(blob, dtype="<f4")
        return found

    def put_many(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [(key, np.ascontiguousarray(v, dtype="<f4").tobytes()) for key, v in items]
        for _, blob in rows:
            if len(blob) != 4 * self.dim:
                raise ValueError(f"a vector of {len(blob) // 4} floats does not fit a {self.dim}-wide cache")
        with self._lock:
            conn = self._connection()
            with conn:
                conn.executemany("INSERT OR IGNORE INTO vec (key, v) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM vec").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


class _MemoryCache:
    """The in-process stand-in for EncodingCache when no cache folder is given."""

    def __init__(self):
        self._vectors: dict[bytes, np.ndarray] = {}

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        return {k: self._vectors[k] for k in keys if k in self._vectors}

    def put_many(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        for key, v in items:
            self._vectors.setdefault(key, np.asarray(v, dtype=np.float32))

    def __len__(self) -> int:
        return len(self._vectors)


class CachedEncoder:
    """A SentenceEncoder that sends each distinct text through the network once.

    Args:
        encoder: a frozen encoder (a trainable one's vectors change, so caching them is wrong).
        cache_dir: holds `encodings/<identity[:16]>.sqlite`; None keeps vectors in memory only.
        progress: show a progress bar when a call has more than one batch of new texts.

    Counters over distinct texts per call: `hits` were found in the cache, `misses` were encoded.
    """

    def __init__(self, encoder: SentenceEncoder, cache_dir: Path | None, progress: bool = False):
        if encoder.trainable:
            raise ValueError("a trainable encoder's vectors change as it trains; cache only a frozen one")
        self.encoder, self.progress = encoder, progress
        self.cache = (
            _MemoryCache() if cache_dir is None else EncodingCache(cache_dir, encoder.identity, encoder.dim)
        )
        self.hits = self.misses = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Vectors of `texts` in their order, (n, dim) float32 on CPU."""
        texts = _checked(texts)
        keys = [text_key(t) for t in texts]
        distinct = dict(zip(keys, texts, strict=True))
        vectors = self.cache.get_many(list(distinct))
        missing = sorted((k for k in distinct if k not in vectors), key=lambda k: -len(distinct[k]))
        self.hits += len(distinct) - len(missing)
        self.misses += len(missing)
        if missing:
            vectors.update(self._encode_and_store(missing, distinct))
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            out[i] = vectors[key]
        return torch.from_numpy(out)

    def _encode_and_store(self, missing: list[bytes], texts: dict[bytes, str]) -> dict[bytes, np.ndarray]:
        # Written back chunk by chunk, so an interrupted run keeps what it has encoded.
        chunk = self.encoder.batch_size * 8
        bar = None
        if self.progress and len(missing) > self.encoder.batch_size:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(missing), unit="text", desc="Encoding texts")
        new: dict[bytes, np.ndarray] = {}
        try:
            for start in range(0, len(missing), chunk):
                keys = missing[start : start + chunk]
                encoded = self.encoder.encode([texts[k] for k in keys]).cpu().numpy()
                items = list(zip(keys, encoded, strict=True))
                self.cache.put_many(items)
                new.update(items)
                if bar is not None:
                    bar.update(len(keys))
        finally:
            if bar is not None:
                bar.close()
        return new
