"""Where the platform keeps its files, resolved once at the edge (CLI or flow start).

The project root is `$INSTRUCTUE_ROOT` if set, else the git top-level of the working directory,
else the working directory. Data, quarantine and caches live under it unless overridden.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict

ROOT_ENV = "INSTRUCTUE_ROOT"
# Prefect waits 20 s for its ephemeral server by default. On a busy 2-core machine (CI running the
# suite while another job trains) the server's start took longer and a plain `instructue ingest` died
# with "Timed out while attempting to connect to ephemeral Prefect API server".
SERVER_STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
SERVER_STARTUP_SECONDS = 120


def quiet_telemetry() -> None:
    """Nothing here may phone home: Prefect, Great Expectations and DVC analytics off."""
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }.items():
        os.environ.setdefault(key, value)


def patient_server_start() -> None:
    """Give Prefect's ephemeral server time to start on a loaded machine; a user's value is kept."""
    os.environ.setdefault(SERVER_STARTUP_ENV, str(SERVER_STARTUP_SECONDS))


def find_root(start: Path | None = None) -> Path:
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    start = (start or Path.cwd()).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True, check=True
        ).stdout.strip()
        return Path(top)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return start


class Paths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path
    data_dir: str = "data"
    quarantine_dir: str = "quarantine"
    runs_dir: str = "runs"

    @property
    def data(self) -> Path:
        return self.root / self.data_dir

    @property
    def quarantine(self) -> Path:
        return self.root / self.quarantine_dir

    @property
    def runs(self) -> Path:
        """Training runs: `<runs>/<dataset>-<profile>/` with checkpoints and the final model."""
        return self.root / self.runs_dir

    @classmethod
    def resolve(cls, root: Path | None = None) -> Paths:
        return cls(root=(root or find_root()).resolve())
