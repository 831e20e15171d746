"""Where training metrics go: an explicit MLflow sink (no global run state), or nowhere.

The trainer calls `start`, `log_params`, `log_metrics(step)`, `log_artifact` and `finish` on any
object with these methods; `MlflowTracker` writes to the store named in `mlruns_config/tracking.yaml`
(SQLite + a local artifact folder by default, `$MLFLOW_TRACKING_URI` overrides). Nothing is set at
import time and `mlflow` is imported only when a tracker is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from components.common import USER_TAG, acting_user, bounded_yaml, is_server_uri

SETTINGS_FILE = Path("mlruns_config") / "tracking.yaml"


class TrackingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = "instructue-training"

    @classmethod
    def load(cls, root: Path) -> TrackingSettings:
        path = Path(root) / SETTINGS_FILE
        raw = bounded_yaml.load_file(path) if path.is_file() else {}
        return cls.model_validate(raw or {})

    def uri(self, root: Path) -> str:
        return store_uri(self.tracking_uri, root)

    def artifacts(self, root: Path) -> str | None:
        return artifact_uri(self.artifact_root, root, self.uri(root))


def tracking_client(root: Path):
    """An `MlflowClient` on the project's tracking store (`mlruns_config/tracking.yaml`)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(TrackingSettings.load(root).uri(root))


def store_uri(configured: str | None, root: Path) -> str:
    """`$MLFLOW_TRACKING_URI`, else the configured URI, else the project's SQLite store. One rule for
    training runs and the registry, so both find the same store by default."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or configured
        or (f"sqlite:///{(Path(root) / 'mlruns' / 'mlflow.db').resolve()}")
    )


def artifact_uri(configured: str | None, root: Path, tracking: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: the configured location, else none of ours on a
    tracking server (its own artifact store, proxied: team mode), else `<root>/mlruns/artifacts`."""
    if configured:
        return configured
    if is_server_uri(tracking):
        return None
    return (Path(root) / "mlruns" / "artifacts").resolve().as_uri()


class Tracker(Protocol):
    run_id: str | None

    def start(self, run_id: str | None, run_name: str, tags: dict[str, str]) -> str: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, subdir: str | None = None) -> None: ...
    def finish(self, status: str) -> None: ...


class NullTracker:
    run_id: str | None = None

    def start(self, run_id, run_name, tags):
        return ""

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step):
        pass

    def log_artifact(self, path, subdir=None):
        pass

    def finish(self, status):
        pass


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]  # MLflow's limit on a parameter value
    return out


class MlflowTracker:
    """One MLflow run through `MlflowClient`; `start(run_id=...)` reopens a run (resume)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=artifact_location)
        )
        self.run_id: str | None = None

    @classmethod
    def from_settings(cls, root: Path, settings: TrackingSettings | None = None) -> MlflowTracker:
        settings = settings or TrackingSettings.load(root)
        return cls(settings.uri(root), settings.experiment, settings.artifacts(root))

    def start(self, run_id: str | None, run_name: str, tags: dict[str, str]) -> str:
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            tags = {USER_TAG: acting_user(self.tracking_uri), **tags}  # who trained: the four-eyes rule
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in existing]  # a resumed run keeps its own
        for start in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), subdir)
        else:
            self.client.log_artifact(self.run_id, str(path), subdir)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
