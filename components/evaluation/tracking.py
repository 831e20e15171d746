"""The evaluation's MLflow side: a written report logged into a run, found again by its weights.

    log_to_mlflow(client, run_id, report, folder)   # metrics, gate tags, the report folder

`EVAL_DIGEST_TAG` holds `factory.model_digest` of the evaluated folder: registration finds the
evaluation of a model by it (`registry/register.py`), so the gate is never read from a loose file.
"""

from __future__ import annotations

import time
from pathlib import Path

EVAL_DIGEST_TAG = "eval.model_digest"  # the run that holds a model's evaluation, found by its weights


def log_to_mlflow(client, run_id: str, report: dict, folder: Path, data_docs: Path | None = None) -> None:
    """Log a written report into an MLflow run: headline metrics, per-task AUCs, the gate verdict as
    tags, and the report folder (markdown, JSON, plots) as artifacts under `evaluation/`.

    Args:
        client: an `mlflow.tracking.MlflowClient` (the caller resolves the store, see `tracking.py`).
        run_id: the run to log into.
        report: the JSON report (`report.report_dict`).
        folder: the folder `report.write_report` wrote.
        data_docs: the Great Expectations Data Docs site of the data evaluated on, logged under
            `data_docs/` so the run keeps the validation record of its data version.
    """
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = []
    for key, value in report["headline"].items():
        if isinstance(value, int | float) and value is not None and not isinstance(value, bool):
            metrics.append(Metric(f"eval/{key}", float(value), now, 0))
    for kind in ("tasks", "baselines"):
        for name_a, by in report[kind].items():
            for name_b, s in by.items():
                task, who = (name_a, name_b) if kind == "tasks" else (name_b, name_a)
                metrics.append(Metric(f"eval/{who}/{task}/auc", float(s["auc"]), now, 0))
    tags = [
        RunTag(EVAL_DIGEST_TAG, report.get("model_digest") or "-"),
        RunTag("eval.gate", "passed" if report["gate"]["passed"] else "failed"),
        RunTag("eval.gate_reasons", "; ".join(report["gate"]["reasons"])[:5000] or "-"),
    ]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.log_artifacts(run_id, str(folder), artifact_path="evaluation")
    if data_docs is not None:
        client.log_artifacts(run_id, str(data_docs), artifact_path="data_docs")
