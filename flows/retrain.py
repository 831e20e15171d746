"""The retraining flow: ingest -> validate -> version (DVC) -> synthesize UserQA -> train (TMoLE,
S2Sched) -> merge (TIES, chosen on validation) -> evaluate (probes, baselines) -> gate -> register.

    instructue retrain --dataset movielens-100k --profile quick        # the README's main command
    instructue retrain --profile tiny --set steps=20                   # a smoke run

Each step is a Prefect task whose body calls one component function. Steps are cached by the content
of their inputs (`flows/caching.py`): re-running with the same data and configuration skips every
finished step; changing the data re-runs from synthesis on, changing a training knob from training on.
Runs that share a folder (a training under two merge settings, a dataset under two reader options)
overwrite each other's files there; a step whose files another run overwrote runs again instead of
answering from the cache (`.<step>.key` files).
A failing gate fails the flow with the gate's reasons and registers nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.caching import CACHED, file_digest, folder_digest, key_of
from flows.settings import Paths

EVALUATION_DIR = "evaluation"  # <run>/evaluation/: the winner's report, whichever candidate won
# <folder>/.<step>.key: the cache key whose outputs lie on disk now. Runs that differ only in merge or
# evaluation settings share the training's run folder, and runs with other reader options or another
# UserQA writer share `data/<dataset>/`; each overwrites the other's files, so a cache hit must not
# answer with the record of files that are gone. Data steps keep theirs in `runs/.keys/<dataset>/`
# (data/ is versioned by DVC, and a key names the clone's path).
STEP_KEY_FILE = ".{step}.key"
DATA_KEYS_DIR = ".keys"
MAX_BAD_SHARE = 0.05  # the ingestion default: more bad rows than this stops the flow
CONTRACT_FILES = ("schema.yaml", "users.parquet", "events.parquet", "labels.parquet", "cutoffs.parquet")


class GateFailedError(RuntimeError):
    """The candidate did not pass its gate; the reasons are in the message and in the report."""


# -- steps: each body is one component call -------------------------------------------------------
@task(name="ingest", **CACHED)
def ingest_step(cache_key: str, dataset: str, options: dict, root: Path, max_bad_share: float) -> dict:
    from components.ingestion import ingest, read_dataset

    paths = Paths.resolve(root)
    summary = ingest(read_dataset(dataset, **options), paths.data, paths.quarantine,
                     max_bad_share=max_bad_share, docs_root=paths.data_docs)  # fmt: skip
    return asdict(summary)


@task(name="version-data")
def version_step(root: Path) -> dict:
    # not cached: `dvc add` of unchanged content is quick, and its hash is what the registry records
    from components.ingestion import versioning

    versioning.ensure_dvc_repo(root)
    version = versioning.version_data(root)
    try:  # the version the registry records is then restorable with `dvc pull` in another clone
        pushed = str(versioning.push(root))
    except versioning.VersioningError as e:  # an unreachable remote must not stop a retrain
        get_run_logger().warning("data version %s not pushed: %s", version.md5, e)
        pushed = None
    return {
        "md5": version.md5,
        "datasets": version.datasets,
        "dvc_file": str(version.dvc_file),
        "pushed": pushed,
    }


@task(name="synthesize", retries=2, retry_delay_seconds=10, **CACHED)
def synthesize_step(cache_key: str, data_dir: Path, writer: str, writer_options: dict, config: dict) -> dict:
    # retries: an endpoint writer can fail transiently; finished chunks are kept, so a retry resumes
    from components.userqa import SynthesisConfig, make_writer, synthesize

    summary = synthesize(
        data_dir, make_writer(writer, **writer_options), SynthesisConfig.model_validate(config)
    )
    return asdict(summary)


@task(name="train", retries=1, retry_delay_seconds=5, **CACHED)
def train_step(
    cache_key: str, config: dict, data_dir: Path, run_dir: Path, tracking_root: Path | None
) -> dict:
    # resume=True: a retry, or a re-run after a crash, continues from the newest complete checkpoint
    from components.training import MlflowTracker, TrainConfig, train

    tracker = MlflowTracker.from_settings(tracking_root) if tracking_root else None
    return train(
        TrainConfig.model_validate(config), data_dir, run_dir, tracker=tracker, resume=True
    ).to_dict()


@task(name="merge-and-select", **CACHED)
def merge_step(cache_key: str, run_dir: Path, data_dir: Path, settings: dict) -> dict:
    from components.evaluation import validation_scorer
    from components.ingestion import read_tables
    from components.merging import MergeSettings, merge_and_select

    merge = MergeSettings.model_validate(settings)
    card, tables = read_tables(data_dir)
    score = validation_scorer(card, tables, merge.validation_seeds, merge.validation_users)
    return merge_and_select(run_dir, merge, score).to_dict()


@task(name="evaluate", **CACHED)
def evaluate_step(cache_key: str, model_dir: Path, data_dir: Path, run_dir: Path, root: Path,
                  champion: dict | None, run_id: str | None, overrides: dict) -> dict:  # fmt: skip
    from components.evaluation import evaluate as ev
    from components.evaluation import (
        log_to_mlflow,
        s2sched_from_checkpoints,
        s2sched_from_mlflow,
        table,
        write_report,
    )
    from components.modeling import save_tuned
    from flows.evaluate import CACHE_DIR, build_settings, evaluation_run, mlflow_client

    settings = build_settings(root, data_dir.name, overrides)
    # the winner may be a checkpoint or the merge: the S2Sched history is the training run's
    history = (
        s2sched_from_mlflow(mlflow_client(root), run_id) if run_id else s2sched_from_checkpoints(run_dir)
    )
    result = ev.evaluate_model(
        model_dir, data_dir, settings, root / CACHE_DIR, champion, s2sched_history=history
    )
    out_dir = run_dir / EVALUATION_DIR
    report = write_report(result, out_dir)
    if result.tuned:  # beside the weights they fit: `instructue embed --tuned <task>` uses them
        save_tuned(model_dir, list(result.tuned.values()))
    # the report and plots join the training run in MLflow (or a run of their own): registration
    # reads the gate from there, found by the model's digest, never from a file a person passes
    docs = Paths.resolve(root).data_docs / data_dir.name  # the Data Docs of the version evaluated on
    log_to_mlflow(mlflow_client(root), run_id or evaluation_run(root, data_dir.name, model_dir), report,
                  out_dir, data_docs=docs if docs.is_dir() else None)  # fmt: skip
    return {"gate": report["gate"], "headline": report["headline"], "seconds": report.get("seconds"),
            "folder": str(out_dir), "table": table(result)}  # fmt: skip


@task(name="register", **CACHED)
def register_step(cache_key: str, model_dir: Path, report: Path, data_dir: Path, root: Path) -> dict:
    from components.registry import RegistrySettings, register, whoami

    settings = RegistrySettings.load(root)
    client = settings.client(root)
    done = register(client, settings.experiment_id(client, root), model_dir=model_dir, report_path=report,
                    dataset_dir=data_dir, name=settings.name_for(data_dir.name), root=root,
                    bundle_base_models=settings.bundle_base_models,
                    me=whoami(client.tracking_uri))  # team mode: the trainer role, verified  # fmt: skip
    return asdict(done) | {"uri": done.uri}


# -- the flow --------------------------------------------------------------------------------------
def _outputs_are(output: Path, marker: Path, key: str) -> bool:
    """Whether `output` exists and is `key`'s: the step's key file `marker` names `key`, or is missing
    (outputs from before the key files: trusted, as they were)."""
    return output.is_file() and (not marker.is_file() or marker.read_text(encoding="utf-8") == key)


def _stamp(marker: Path, key: str, state: str) -> None:
    """Record that the step's outputs on disk are `key`'s, once it has run (not on a cache hit, which
    wrote nothing)."""
    from components.common import write_bytes_atomic

    if state == "Completed":
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(marker, key.encode("utf-8"))


@flow(name="retrain")
def retrain_flow(
    dataset: str = "movielens-100k",
    profile: str = "quick",
    overrides: list[str] | None = None,
    options: dict[str, Any] | None = None,
    writer: str = "template",
    writer_options: dict[str, Any] | None = None,
    root: str | None = None,
    register_model: bool = True,
    track: bool = True,
    refresh: bool = False,
    evaluation: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict:
    """Parameters: the dataset (a reader name), the run profile (`tiny`, `quick`, `paper` or a YAML
    path) with `key=value` overrides, reader options, the UserQA writer and evaluation overrides
    (dotted keys as `instructue evaluate --set`, e.g. `{"tuning.steps": 10}`). Returns every step's
    record, the evaluation report's path, the gate verdict and the registered version. `config`: the
    resolved training configuration when the caller has loaded the profile already (the CLI does,
    to fail before any step): it is then validated, not loaded again."""
    from components.modeling import WEIGHTS_FILE
    from components.registry import champion_for
    from components.run_config import RunConfig, load_run
    from flows.evaluate import build_settings

    paths = Paths.resolve(Path(root) if root else None)
    # the profile is read once per retrain: here, or by the caller that passes it resolved
    run = RunConfig.model_validate(config) if config else load_run(profile, list(overrides or []))
    evaluation = dict(evaluation or {})  # so are the evaluation overrides; the resolved settings
    # key the evaluation's cache, so that a changed default (tuning.centre) re-runs it
    resolved_evaluation = build_settings(paths.root, dataset, evaluation).model_dump(
        mode="json", exclude={"progress"}
    )
    steps = _Steps(
        get_run_logger(), refresh, str(paths.root)
    )  # two clones share Prefect's cache, not its hits
    out: dict[str, Any] = {"dataset": dataset, "profile": run.train.profile, "seconds": steps.seconds,
                           "states": steps.states}  # fmt: skip
    data_dir = paths.data / dataset
    contract = _data_steps(
        steps, out, paths, dataset, dict(options or {}), writer, dict(writer_options or {})
    )
    run_dir, train_key = _model_steps(steps, out, paths, data_dir, contract, run, track)
    winner = Path(out["selection"]["folders"][out["selection"]["winner"]])
    weights = folder_digest(winner, WEIGHTS_FILE)  # not the tuned instructions evaluation adds

    champion = champion_for(paths.root, dataset)
    eval_dir = run_dir / EVALUATION_DIR
    gates = file_digest(paths.root / "mlruns_config" / "gates.yaml")
    key = steps.key("evaluate", model=weights, contract=contract, champion=champion, gates=gates,
                    settings=resolved_evaluation)  # fmt: skip
    args = (winner, data_dir, run_dir, paths.root, champion, out["train"].get("run_id"), evaluation)
    out["evaluation"] = steps.keyed("evaluate", evaluate_step, key, eval_dir / "report.json", run_dir, *args)
    gate = out["evaluation"]["gate"]
    if not gate["passed"]:
        reasons = "\n- ".join(gate["reasons"])
        raise GateFailedError(
            f"the gate failed for {winner} (report: {eval_dir / 'report.md'}):\n- {reasons}"
        )
    if register_model:
        report = eval_dir / "report.json"
        key = steps.key(
            "register", model=weights, report=file_digest(report), data=out["data_version"]["md5"]
        )
        out["registered"] = steps.timed("register", register_step, key, winner, report, data_dir, paths.root)
    return out


class _Steps:
    """Runs the flow's steps: each timed, its Prefect state recorded, cached ones keyed by content."""

    def __init__(self, log, refresh: bool, root_id: str):
        self.log, self.refresh, self.root_id = log, refresh, root_id
        self.seconds: dict[str, float] = {}
        self.states: dict[str, str] = {}

    def key(self, name: str, **parts) -> str:
        return key_of(name, root=self.root_id, **parts)

    def timed(self, name, step, *args):
        t0 = time.perf_counter()
        state = step(*args, return_state=True)
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        self.states[name] = state.name  # "Cached" when the inputs' content was seen before
        self.log.info("%s: %s in %.1f s", name, state.name, self.seconds[name])
        return state.result()

    def keyed(self, name, step, key: str, output: Path, folder: Path, *args):
        """A cached step, run again when forced, when `output` is gone, or when the step's key file in
        `folder` names another key (another run wrote over its files); a run records its key there."""
        marker = folder / STEP_KEY_FILE.format(step=name)
        step = step.with_options(refresh_cache=self.refresh or not _outputs_are(output, marker, key))
        result = self.timed(name, step, key, *args)
        _stamp(marker, key, self.states[name])
        return result


def _data_steps(steps: _Steps, out: dict, paths: Paths, dataset: str, options: dict, writer: str,
                writer_options: dict) -> str:  # fmt: skip
    """Ingest, synthesize, version; returns the contract files' digest."""
    from components.training import USERQA_FILE
    from components.userqa import SynthesisConfig

    data_dir, data_keys = paths.data / dataset, paths.runs / DATA_KEYS_DIR / dataset
    key = steps.key("ingest", dataset=dataset, options=options, max_bad_share=MAX_BAD_SHARE)
    out["ingest"] = steps.keyed("ingest", ingest_step, key, data_dir / "manifest.json", data_keys,
                                dataset, options, paths.root, MAX_BAD_SHARE)  # fmt: skip
    contract = file_digest(*(data_dir / f for f in CONTRACT_FILES))
    synth = SynthesisConfig().model_dump(mode="json")
    key = steps.key("synthesize", contract=contract, writer=writer, options=writer_options, config=synth)
    out["synthesize"] = steps.keyed("synthesize", synthesize_step, key, data_dir / USERQA_FILE, data_keys,
                                    data_dir, writer, writer_options, synth)  # fmt: skip
    out["data_version"] = steps.timed("version", version_step, paths.root)
    return contract


def _model_steps(steps: _Steps, out: dict, paths: Paths, data_dir: Path, contract: str, run,
                 track: bool) -> tuple[Path, str]:  # fmt: skip
    """Train, then merge and select; returns the run folder and the training key."""
    from components.merging import SELECTION_FILE
    from components.training import RESULT_FILE, USERQA_FILE

    config = run.train
    userqa = file_digest(data_dir / USERQA_FILE)
    train_key = steps.key("train", contract=contract, userqa=userqa, config=config.model_dump(mode="json"))
    run_dir = paths.runs / f"{data_dir.name}-{config.profile}-{train_key.split('-')[-1][:8]}"
    tracking = paths.root if track else None
    out["train"] = steps.keyed("train", train_step, train_key, run_dir / RESULT_FILE, run_dir,
                               config.model_dump(mode="json"), data_dir, run_dir, tracking)  # fmt: skip
    merge = run.merge.model_dump(mode="json")
    key = steps.key("merge", train=train_key, result=file_digest(run_dir / RESULT_FILE), merge=merge)
    out["selection"] = steps.keyed("merge", merge_step, key, run_dir / SELECTION_FILE, run_dir,
                                   run_dir, data_dir, merge)  # fmt: skip
    return run_dir, train_key
