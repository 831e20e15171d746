"""The REST scoring server for a registry alias: MLflow's scoring app behind request bounds.

    cmd, env = serve_command("models:/instructue-movielens-100k@champion", tracking_uri, port=5001)
    subprocess.Popen(cmd, env=env)

The command runs `components.registry.scoring_app` with this venv's Python: it downloads the
version, serves it with MLflow's own scoring app from the current environment (nothing is installed
or downloaded beyond the version) and bounds each request (body size, nesting, records, each record
checked against the card; see `scoring_app.py`). Requests follow MLflow's
scoring protocol; a body for two users of a dataset with a `ratings` source and an `age` feature:

    POST /invocations  {"dataframe_records": [
        {"user_id": 7, "ratings": ["Rated Heat (1995) 4/5.", ...], "age": 31, "task": "gender_female"},
        {"user_id": 9, "ratings": [...], "age": 22, "instruction": "Which genres does this user like?"}]}
    -> {"predictions": [[0.01, ...], [...]]}  (one L2-normalised embedding per record)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def venv_bin() -> Path:
    return Path(sys.executable).parent


def serve_command(
    model_uri: str,
    tracking_uri: str,
    registry_uri: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5001,
    workers: int = 1,
    token_file: Path | None = None,
    protect_health: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve `model_uri` on `host:port`; with `token_file`
    (or `$INSTRUCTUE_SERVE_TOKEN` in the environment) every request needs the bearer token."""
    cmd = [sys.executable, "-m", "components.registry.scoring_app", model_uri, "--host", host,
           "--port", str(port), "--workers", str(workers)]  # fmt: skip
    if token_file is not None:
        cmd += ["--token-file", str(token_file)]
    if protect_health:
        cmd.append("--protect-health")
    env = {
        **os.environ,
        "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_REGISTRY_URI": registry_uri or tracking_uri,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    return cmd, env
