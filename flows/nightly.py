"""The nightly flow: the test tiers too slow for every CI run (`pytest -m slow`: the real default
models, behavioural tests of the trained quick model, SIGKILL during registration).

    prefect --no-prompt deploy --name nightly-slow-tests     # from prefect.yaml, daily 01:00 UTC
    python -m flows.nightly                                  # once, here

The flow fails when a test fails; its log holds pytest's summary.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.settings import Paths


@task(name="pytest")
def pytest_task(root: Path, marker: str, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider", *extra]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    log = get_run_logger()
    for line in done.stdout.splitlines()[-30:]:
        log.info(line)
    if done.returncode not in (0, 5):  # 5: no test collected
        raise RuntimeError(f"`{' '.join(cmd[2:])}` exited {done.returncode}; see the log for the failures")
    return done.returncode


@flow(name="nightly-slow-tests")
def nightly_flow(marker: str = "slow", extra: list[str] | None = None, root: str | None = None) -> int:
    return pytest_task(Paths.resolve(Path(root) if root else None).root, marker, list(extra or []))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(nightly_flow())
