"""The evaluation flow: a model folder + a dataset -> probe table, baselines, gate verdict, report.

    instructue evaluate --model runs/movielens-100k-quick/model --dataset movielens-100k

One Prefect task per stage of `components/evaluation/evaluate.py`, each task body one component
call. The report goes to `<run>/evaluation/` for a run's final model (`<run>/model`), else to
`<run>/evaluation-<folder name>/`, and into the training run in MLflow when the run was tracked.
Baseline features are cached under `<root>/.cache/baselines/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.common import set_dotted
from components.evaluation import (
    compute_baselines,
    data_fingerprint,
    load_gate_settings,
    log_to_mlflow,
    table,
    write_report,
)
from components.evaluation import evaluate as ev
from flows.settings import Paths

CACHE_DIR = ".cache"
EVALUATION_EXPERIMENT = "instructue-evaluation"


def default_report_dir(model_dir: Path) -> Path:
    model_dir = Path(model_dir).resolve()
    name = "evaluation" if model_dir.name == "model" else f"evaluation-{model_dir.name}"
    return model_dir.parent / name


def build_settings(
    root: Path, dataset: str, overrides: dict[str, Any] | None = None
) -> ev.EvaluationSettings:
    """Defaults, the dataset's gates from `mlruns_config/gates.yaml`, then dotted `key=value`
    overrides (`tuning.steps=10`, `baselines.text_tokens=256`, `gate.auc_floor=0.55`, `seeds=[0,1]`)."""
    nested: dict[str, Any] = {"gate": load_gate_settings(root, dataset).model_dump()}
    for key, value in (overrides or {}).items():
        set_dotted(nested, key, value)
    return ev.EvaluationSettings.model_validate(nested)


def champion_from_report(path: Path) -> dict[str, float]:
    """The per-task AUCs a previous report gated on (its "candidate"), as the champion's."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    aucs = (report.get("candidate") or {}).get("task_auc")
    if not aucs:
        raise ValueError(f"{path} has no candidate.task_auc; is it an evaluation report.json?")
    return {str(k): float(v) for k, v in aucs.items()}


def training_run_id(model_dir: Path) -> str | None:
    """The MLflow run the model's training logged to (`<run>/result.json`), if any."""
    from components.training import RESULT_FILE

    file = Path(model_dir).parent / RESULT_FILE
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8")).get("run_id") or None


def mlflow_client(root: Path):
    from components.training import tracking_client

    return tracking_client(root)


def evaluation_run(root: Path, dataset: str, model_dir: Path) -> str:
    """A run of its own for an evaluation without a training run (registration finds it by the
    model's digest tag, which `log_to_mlflow` sets)."""
    from components.training import TrackingSettings

    client = mlflow_client(root)
    found = client.get_experiment_by_name(EVALUATION_EXPERIMENT)
    artifacts = TrackingSettings.load(root).artifacts(root)
    exp = found.experiment_id if found else client.create_experiment(EVALUATION_EXPERIMENT, artifacts)
    from components.common import USER_TAG, acting_user

    run_id = client.create_run(exp, run_name=f"evaluate-{dataset}-{Path(model_dir).name}",
                               tags={USER_TAG: acting_user(client.tracking_uri)}).info.run_id  # fmt: skip
    client.set_terminated(run_id)
    return run_id


# -- tasks: one component call each -----------------------------------------------------------------
@task(name="load-model-and-data", cache_policy=NO_CACHE)
def load_task(model_dir: Path, data_dir: Path, settings: ev.EvaluationSettings):
    return ev.load_inputs(model_dir, data_dir, settings)


@task(name="choose-tuning-users", cache_policy=NO_CACHE)
def choose_task(inputs, settings):
    return ev.choose_tuning_users(inputs, settings)


@task(name="tune-instructions", cache_policy=NO_CACHE)
def tune_task(inputs, tuning_users, settings):
    return ev.tune_instructions(inputs, tuning_users, settings)


@task(name="embed-variants", cache_policy=NO_CACHE)
def embed_task(inputs, tuned, settings):
    return ev.embed_variants(inputs, tuned, settings)


@task(name="baselines", cache_policy=NO_CACHE)
def baselines_task(inputs, settings, cache_dir: Path):
    # the raw backbone's pass over every probe user's text is minutes on a cold cache: show its bar
    return compute_baselines(inputs.card, inputs.tables, inputs.probe_ids, inputs.model.config,
                             settings.baselines, data_fingerprint(inputs.data_dir), cache_dir,
                             progress=settings.progress)  # fmt: skip


@task(name="probe", cache_policy=NO_CACHE)
def probe_task(inputs, representations, tuning_users, settings):
    return ev.probe_all(inputs, representations, tuning_users, settings)


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(scores, baseline_names, settings, champion):
    return ev.gate(scores, baseline_names, settings, champion)


@task(name="s2sched-history", cache_policy=NO_CACHE)
def history_task(root: Path, run_id: str):
    from components.evaluation import s2sched_from_mlflow

    return s2sched_from_mlflow(mlflow_client(root), run_id)


@task(name="save-tuned-instructions", cache_policy=NO_CACHE)
def save_tuned_task(model_dir: Path, tuned: dict) -> None:
    # beside the weights they were tuned for, so `instructue embed --tuned <task>` finds them
    from components.modeling import save_tuned

    save_tuned(model_dir, list(tuned.values()))


@task(name="write-report", cache_policy=NO_CACHE)
def report_task(result, folder: Path) -> dict:
    return write_report(result, folder)


@task(name="log-to-mlflow", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def log_task(root: Path, run_id: str, report: dict, folder: Path) -> None:
    log_to_mlflow(mlflow_client(root), run_id, report, folder)


@flow(name="evaluate")
def evaluate_flow(
    model: str,
    dataset: str = "movielens-100k",
    report_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    champion: dict[str, float] | None = None,
    track: bool = True,
    root: str | None = None,
) -> dict:
    """Evaluate a model folder; returns the JSON report (its "gate" says whether it may register)."""
    paths = Paths.resolve(Path(root) if root else None)
    logger = get_run_logger()
    settings = build_settings(paths.root, dataset, overrides)
    model_dir, data_dir = Path(model), paths.data / dataset
    folder = Path(report_dir) if report_dir else default_report_dir(model_dir)
    timed = ev.StageClock()
    inputs = timed("load", load_task, model_dir, data_dir, settings)
    tuning_users = choose_task(inputs, settings)
    tuned = timed("tune", tune_task, inputs, tuning_users, settings)
    reps = timed("embed", embed_task, inputs, tuned, settings)
    feats = timed("baselines", baselines_task, inputs, settings, paths.root / CACHE_DIR)
    representations = {**reps, **{name: {"*": f.matrix} for name, f in feats.items()}}
    scores = timed("probe", probe_task, inputs, representations, tuning_users, settings)
    verdict = timed("gate", gate_task, scores, list(feats), settings, champion)
    run_id = training_run_id(model_dir) if track else None
    history = None
    if run_id:
        try:
            history = history_task(paths.root, run_id) or None
        except Exception as e:  # noqa: BLE001 - the plot falls back to the checkpoints' points
            logger.warning(
                "S2Sched history from MLflow run %s unavailable (%s); using checkpoints", run_id, e
            )
    result = ev.assemble(
        inputs, settings, tuning_users, tuned, reps, feats, scores, verdict, timed.total(), history
    )
    report = report_task(result, folder)
    if result.tuned:
        save_tuned_task(model_dir, result.tuned)
    if track:
        run_id = run_id or evaluation_run(paths.root, dataset, model_dir)
        log_task(paths.root, run_id, report, folder)
    logger.info("report: %s (gate %s)", folder, "passed" if verdict.passed else "failed")
    return {"report": report, "folder": str(folder), "run_id": run_id, "table": table(result)}
