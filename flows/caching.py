"""Input-keyed caching for the retraining flow: a step is skipped when its inputs' *content* is
unchanged and its outputs are still on disk.

Each cached task takes a `cache_key` argument that the flow computes from content (file hashes, the
resolved config), never from object identity or paths alone; `by_key` hands it to Prefect, which
persists the task's (JSON) result under that key in `$PREFECT_HOME`. When a step's outputs were
deleted, the flow runs it with `refresh_cache=True`, so a stale hit can never point at missing files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CACHED = {"cache_key_fn": lambda _ctx, params: params["cache_key"], "persist_result": True,
          "result_serializer": "json"}  # fmt: skip


def file_digest(*files: Path) -> str:
    """sha256 over the files' names and bytes, in the order given; a missing file counts as absent."""
    h = hashlib.sha256()
    for file in files:
        file = Path(file)
        h.update(file.name.encode() + b"\0")
        if not file.is_file():
            h.update(b"<absent>")
            continue
        with file.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def folder_digest(folder: Path, pattern: str = "*") -> str:
    """sha256 over every file matching `pattern` under `folder` (sorted by relative path)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob(pattern) if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + file_digest(p).encode())
    return h.hexdigest()


def key_of(step: str, **parts: Any) -> str:
    """A stable key for `step` from JSON-able parts (paths as strings, nested dicts sorted)."""
    payload = json.dumps({"step": step, **parts}, sort_keys=True, default=str)
    return f"{step}-{hashlib.sha256(payload.encode()).hexdigest()[:24]}"
