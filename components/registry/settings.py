"""Registry settings (`mlruns_config/registry.yaml`), validated once at the edge.

    settings = RegistrySettings.load(root)
    client = settings.client(root)                 # MlflowClient(tracking, registry): no globals
    name = settings.name_for("movielens-100k")     # "instructue-movielens-100k"

By default the registry shares the training runs' store: SQLite at `<root>/mlruns/mlflow.db` and the
artifact folder `<root>/mlruns/artifacts`. `$MLFLOW_TRACKING_URI` / `$MLFLOW_REGISTRY_URI` override
the file (a tracking server), the way every MLflow tool reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.common import bounded_yaml

SETTINGS_FILE = Path("mlruns_config") / "registry.yaml"


class RegistrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = None
    registry_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = "instructue-registry"
    model_name: str = Field("instructue-{dataset}", description="registered model name per dataset")
    bundle_base_models: bool = True
    lock_dir: str | None = None

    @field_validator("model_name")
    @classmethod
    def _has_dataset(cls, v: str) -> str:
        if "{dataset}" not in v:
            raise ValueError(f"model_name {v!r} must contain '{{dataset}}' (one model per dataset)")
        return v

    @classmethod
    def load(cls, root: Path, path: Path | None = None) -> RegistrySettings:
        """Read `<root>/mlruns_config/registry.yaml` (or `path`); a missing file gives the defaults."""
        path = Path(path) if path else Path(root) / SETTINGS_FILE
        raw = bounded_yaml.load_file(path) if path.is_file() else {}
        try:
            return cls.model_validate(raw or {})
        except ValueError as e:
            raise ValueError(f"{path} is invalid; fix these fields:\n{e}") from None

    def tracking(self, root: Path) -> str:
        from components.training import store_uri

        return store_uri(self.tracking_uri, root)

    def registry(self, root: Path) -> str:
        return os.environ.get("MLFLOW_REGISTRY_URI") or self.registry_uri or self.tracking(root)

    def artifacts(self, root: Path) -> str | None:
        from components.training import artifact_uri

        return artifact_uri(self.artifact_root, root, self.tracking(root))

    def locks(self, root: Path) -> Path:
        return Path(self.lock_dir) if self.lock_dir else Path(root) / "mlruns" / "locks"

    def name_for(self, dataset: str) -> str:
        return self.model_name.format(dataset=dataset)

    def client(self, root: Path):
        """An `MlflowClient` bound to this store; a local SQLite store's folder is created first."""
        from mlflow.tracking import MlflowClient

        uri = self.tracking(root)
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=uri, registry_uri=self.registry(root))

    def experiment_id(self, client, root: Path) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifacts(root))
