"""Shard plans: a job over many users split into deterministic, resumable parts.

    plan = ShardPlan.of(user_ids, shard_users=1024, key=inputs_key(...))
    store = ShardStore(Path("emb.parquet.parts"), plan)
    for shard in store.missing():            # a re-run skips the parts already written
        store.write(shard.index, parquet_bytes)
    frames = [store.read(i) for i in range(len(plan))]

Users are cut, in the dataset's own order, into contiguous runs of `shard_users`, so the same
dataset version and size always give the same shards, whoever computes them and in whatever order.
A part is written through a temp file and a rename: it exists complete or not at all, so a killed
run loses at most the shards in flight. Parts live under a folder named by the plan's `key` (a
hash of every input the output depends on); a run with other inputs starts a fresh folder and
clears the stale ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from components.common.atomic import remove_stale_temps, write_bytes_atomic, write_text

T = TypeVar("T")

MANIFEST = "manifest.json"


def inputs_key(*parts: object) -> str:
    """A short, stable hash of JSON-able inputs (bytes are hashed as they are)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(hashlib.sha256(part).digest())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks (data tables of a million users do not fit in one read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Shard:
    index: int
    user_ids: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"


@dataclass(frozen=True)
class ShardPlan:
    key: str
    shards: tuple[Shard, ...]

    @classmethod
    def of(cls, user_ids: Iterable[int], shard_users: int, key: str) -> ShardPlan:
        if shard_users < 1:
            raise ValueError(f"shard_users must be at least 1, not {shard_users}")
        ids = list(dict.fromkeys(int(u) for u in user_ids))
        return cls(
            key,
            tuple(
                Shard(i, tuple(ids[start : start + shard_users]))
                for i, start in enumerate(range(0, len(ids), shard_users))
            ),
        )

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def user_ids(self) -> list[int]:
        return [u for s in self.shards for u in s.user_ids]


class ShardStore:
    """The parts of one plan under `root/<key>/`; `root` holds no other key's parts after `open`."""

    def __init__(self, root: Path, plan: ShardPlan):
        self.root, self.plan = Path(root), plan
        self.folder = self.root / plan.key

    def open(self, inputs: dict | None = None) -> ShardStore:
        """Create the folder, drop other keys' parts and temps a killed run left; record the plan."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.iterdir():
            if stale.is_dir() and stale.name != self.plan.key:
                shutil.rmtree(stale, ignore_errors=True)
        self.folder.mkdir(exist_ok=True)
        for shard in self.plan.shards:
            remove_stale_temps(self.folder / shard.name)
        manifest = {
            "key": self.plan.key,
            "shards": len(self.plan),
            "users": sum(len(s.user_ids) for s in self.plan.shards),
            "inputs": inputs or {},
        }
        write_text(self.folder / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
        return self

    def path(self, index: int) -> Path:
        return self.folder / self.plan.shards[index].name

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def missing(self) -> list[Shard]:
        return [s for s in self.plan.shards if not self.done(s.index)]

    def write(self, index: int, data: bytes) -> Path:
        return write_bytes_atomic(self.path(index), data)

    def read(self, index: int):
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(self.path(index).read_bytes()))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def worker_cached(key: Hashable, build: Callable[[], T]) -> tuple[T, float]:
    """`build()` once per process for `key` (a model, a dataset's tables): what each shard worker
    loads once and reuses for every shard it runs. Returns the value and the seconds this call spent
    building it (0 on a hit). The few newest entries are kept, so a long-lived worker does not
    accumulate every model it ever served."""
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key], 0.0
        start = time.perf_counter()
        value = build()
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        return value, time.perf_counter() - start


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def parquet_bytes(table) -> bytes:
    """A pyarrow table (or a pandas frame) as zstd parquet bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class ShardResult:
    """What one shard task reports back: for the progress bar, the summary and MLflow metrics."""

    index: int
    users: int
    rows: int
    seconds: float  # the shard's own work, model loading excluded
    load_seconds: float  # model/data loading this shard paid (0 when the worker had them)
    worker: str  # host:pid that ran it
    reused: bool = False  # complete from an earlier run; nothing computed
    started_at: float = 0.0  # epoch seconds: with `ended_at`, the gaps between a worker's shards
    ended_at: float = 0.0

    @classmethod
    def reused_part(cls, shard: Shard) -> ShardResult:
        """A shard whose part an earlier run wrote: nothing computed."""
        return cls(shard.index, len(shard.user_ids), 0, 0.0, 0.0, worker_name(), reused=True)


def shard_summary(results: Sequence[ShardResult], wall_seconds: float) -> dict[str, float]:
    """Totals for a sharded run: computed vs reused shards, users/s, and the time not spent in shards."""
    computed = [r for r in results if not r.reused]
    users = sum(r.users for r in computed)
    return {
        "shards": len(results),
        "shards_computed": len(computed),
        "shards_reused": len(results) - len(computed),
        "workers": len({r.worker for r in computed}),
        "users_computed": users,
        "wall_seconds": wall_seconds,
        "users_per_second": users / wall_seconds if wall_seconds else 0.0,
        "shard_seconds_total": sum(r.seconds for r in computed),
        "load_seconds_total": sum(r.load_seconds for r in computed),
    }
