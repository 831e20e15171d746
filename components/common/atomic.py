"""Write-then-rename helpers: readers of an output never see it half-written."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def temp_sibling(target: Path, tag: str = "tmp") -> Path:
    """A fresh hidden folder next to `target` (same filesystem, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder `tmp` to `target`, replacing what was there.

    The old folder is renamed aside first and deleted after the new one is in place, so `target`
    is either the old or the new complete folder at every instant but one rename.
    """
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write a file through a temp sibling and a rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_temps(target: Path) -> None:
    """Delete the temp folders a killed run left next to `target` (`.<name>.tmp-*`, `.<name>.old-*`).

    Two runs writing the same target at once are not supported: the later one clears the other's temp.
    """
    if not target.parent.is_dir():
        return
    for p in target.parent.glob(f".{target.name}.*"):
        if ".tmp-" in p.name or ".old-" in p.name:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
