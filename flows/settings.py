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
# Environment defaults for every process that imports `flows` (a user's value is always kept):
# nothing may phone home (Prefect, Great Expectations, DVC and Hugging Face analytics and hub calls
# off), and Prefect's ephemeral server gets 120 s to start instead of its 20: on a busy 2-core
# machine (CI running the suite while another job trains) the start took longer and a plain
# `instructue ingest` died with "Timed out while attempting to connect to ephemeral Prefect API server".
SERVER_STARTUP_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
ENVIRONMENT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    SERVER_STARTUP_ENV: "120",
}


def apply_environment_defaults() -> None:
    """Set `ENVIRONMENT_DEFAULTS` where the environment does not already say otherwise."""
    for key, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(key, value)


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
    """The project's folders, absolute, under one root:

    - `data`: published datasets (`data/<dataset>/`), versioned with DVC;
    - `quarantine`: rows that failed validation, with their reasons;
    - `runs`: training runs (`runs/<dataset>-<profile>/`, checkpoints and the final model);
    - `data_docs`: Great Expectations Data Docs (`data-docs/<dataset>/index.html`), git-ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path
    data: Path
    quarantine: Path
    runs: Path
    data_docs: Path

    @property
    def data_dir(self) -> str:
        """`data` relative to the root: the folder DVC tracks (`<data_dir>.dvc`)."""
        return self.data.relative_to(self.root).as_posix()

    @classmethod
    def resolve(cls, root: Path | None = None) -> Paths:
        root = (root or find_root()).resolve()
        return cls(
            root=root, data=root / "data", quarantine=root / "quarantine", runs=root / "runs",
            data_docs=root / "data-docs",
        )  # fmt: skip
