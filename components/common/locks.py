"""One inter-process lock, on `filelock`: waits up to a timeout, then fails with the caller's message.

    with file_lock(path, timeout_s=600, on_timeout=lambda: RegistryError("... retry ...")):
        ...

A `threading.Lock` per path serialises this process's threads (a `FileLock` object is re-entrant
within its context, so it alone would let a second thread in); a fresh `FileLock` per acquisition
then excludes other processes. Not re-entrant. The lock file stays (removing it races a waiter).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def temp_lock_path(kind: str, target: Path) -> Path:
    """A lock file for `target` in the system temp folder (keyed by its resolved path): it exists before
    the target does and never shows up in a folder that git or DVC hashes."""
    key = hashlib.sha1(str(Path(target).resolve()).encode(), usedforsecurity=False).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"instructue-{kind}-{key}.lock"


@contextmanager
def file_lock(path: Path, timeout_s: float, on_timeout: Callable[[], Exception]) -> Iterator[None]:
    """Hold the lock at `path` (its folder is created); raise `on_timeout()` after `timeout_s`."""
    key = str(Path(path).resolve())
    Path(key).parent.mkdir(parents=True, exist_ok=True)
    with _GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    deadline = time.monotonic() + timeout_s
    if not thread_lock.acquire(timeout=timeout_s):
        raise on_timeout()
    try:
        process_lock = FileLock(key)
        try:
            process_lock.acquire(timeout=max(0.0, deadline - time.monotonic()), poll_interval=0.05)
        except Timeout:
            raise on_timeout() from None
        try:
            yield
        finally:
            process_lock.release()
    finally:
        thread_lock.release()
