"""The registry champion's per-task probe AUCs, for the gate's "no task falls more than a tolerance
below the champion" check (issue 8's gate, issue 10's flow).

The champion's evaluation report travels with its registration run (`evaluation/report.json`); the
AUCs compared are those of the variant the champion's own gate judged (`gates.pick_variant`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from components.registry.promote import CHAMPION, alias_version
from components.registry.register import REPORT_DIR


def champion_aucs(client, name: str, variant: str = "best") -> dict[str, float] | None:
    """task -> AUC of the version `name@champion`, or None when the model or the alias does not exist
    or its run carries no report."""
    from mlflow.exceptions import MlflowException

    from components.evaluation import pick_variant
    from components.registry.register import RegistryError

    try:
        version = alias_version(client, name, CHAMPION)
    except (MlflowException, RegistryError):
        return None  # no registered model of that name yet
    if version is None:
        return None
    run_id = client.get_model_version(name, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, f"{REPORT_DIR}/report.json", tmp)
        except (MlflowException, OSError):
            return None
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    judged = (report.get("candidate") or {}).get("task_auc")
    if judged:  # what the champion's own gate judged
        return {str(t): float(a) for t, a in judged.items()}
    by_variant: dict[str, dict[str, float]] = {}
    for task, variants in report.get("tasks", {}).items():
        for v, score in variants.items():
            by_variant.setdefault(v, {})[task] = float(score["auc"])
    chosen = pick_variant(by_variant, variant)
    return by_variant[chosen] if chosen else None


def champion_for(root: Path, dataset: str, variant: str = "best") -> dict[str, float] | None:
    """`champion_aucs` for a dataset's registered model in the store `mlruns_config/registry.yaml` names."""
    from components.registry.settings import RegistrySettings

    settings = RegistrySettings.load(root)
    return champion_aucs(settings.client(root), settings.name_for(dataset), variant)
