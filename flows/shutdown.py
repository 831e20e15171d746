"""A CLI run ends cleanly however it is stopped: Prefect's temporary server never outlives it.

Prefect starts a temporary API server as a child process on a run's first flow (no
`PREFECT_API_URL`) and stops it from an `atexit` hook. Nothing runs in a process killed with
SIGKILL, and the default SIGTERM action skips `atexit`, so a killed `instructue ingest` left its
server running (issue 27). Two guards:

- `server_dies_with_its_parent`: on Linux the server is started with `PR_SET_PDEATHSIG`, so the
  kernel sends it SIGTERM when the process that started it dies, by any signal. Prefect's own
  `Popen` call is kept; only its `preexec_fn` is added (through the `subprocess` name of Prefect's
  server module, nothing else in the process is touched).
- `exit_on_sigterm`: SIGTERM outside a flow raises SystemExit (143), so `atexit` stops the server;
  inside a flow Prefect's engine handles SIGTERM itself and marks the run Crashed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
import threading
import types

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _popen_dying_with_parent(*args, **kwargs) -> subprocess.Popen:
    previous = kwargs.pop("preexec_fn", None)

    def preexec() -> None:
        _die_with_parent()
        if previous is not None:
            previous()

    return subprocess.Popen(*args, preexec_fn=preexec, **kwargs)  # noqa: PLW1509 - only prctl, no locks


def server_dies_with_its_parent() -> bool:
    """Make Prefect's temporary server exit with the process that started it (Linux); True if set."""
    if not sys.platform.startswith("linux"):
        return False
    from prefect.server.api import server

    if getattr(server.subprocess, "_instructue_pdeathsig", False):
        return True
    shim = types.SimpleNamespace(
        **{k: getattr(subprocess, k) for k in dir(subprocess) if not k.startswith("__")}
    )
    shim.Popen = _popen_dying_with_parent
    shim._instructue_pdeathsig = True
    server.subprocess = shim
    return True


def guard_cli_run() -> None:
    """Both guards, before a CLI command starts its first flow."""
    server_dies_with_its_parent()
    exit_on_sigterm()


def exit_on_sigterm() -> None:
    """SIGTERM -> SystemExit(143) in the main thread (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame) -> None:  # noqa: ARG001 - the signal API
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
