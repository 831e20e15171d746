"""Gated registration: a model folder whose evaluation gate passed becomes a registry version.

    client = settings.client(root)
    version = register(client, settings.experiment_id(client, root), model_dir=..., report_path=...,
                       dataset_dir=root / "data" / "movielens-100k", name=settings.name_for(...),
                       root=root)

What a version carries:
- the pyfunc, logged from code (`pyfunc_model.py`) with the project's `components/` as its code and
  no pickled object: artifacts `model/` (model.json, trainable.safetensors, tokenizer/), `card`
  (the dataset's schema.yaml, which turns request records into profiles) and, unless
  `bundle_base_models` is off, the resolved backbone and encoder folders (safetensors);
- a signature (request records in, an (n, dim) float32 matrix out), an input example and pinned
  requirements;
- on its run: the evaluation report (JSON, and the markdown and plots beside it), headline metrics;
- as version tags: the gate verdict, the dataset's DVC and content hashes, the git commit and the
  headline metrics; and the alias `challenger`.

The gate verdict cannot be forged: it is read from the evaluation recorded in MLflow for the same
weights (the run tagged `eval.model_digest` = `factory.model_digest(model_dir)`, its
`evaluation/report.json`), never from a file a person passes. A `--report` given as well must be that
evaluation's (same digest, same verdict). `override_reason` registers without a passed, recorded
gate; the reason, the user and the evaluation run (if any) are recorded on the version.

The report is the evaluation component's JSON: `gate` {passed, reasons}, `headline` {mean_auc_*,
best_baseline, best_baseline_mean_auc}, `model_digest`, `tasks`. It is read here as plain JSON.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.common import USER_TAG, acting_user
from components.ingestion import CARD_FILENAME, DatasetCard, read_tables

if TYPE_CHECKING:
    from components.registry.team import Identity

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
COMPONENTS_DIR = Path(__file__).resolve().parents[1]
REPORT_DIR = "evaluation"
REPORT_FILE = "report.json"
# What the pyfunc imports at inference (the project's own code travels in the model's code/ folder).
INFERENCE_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "huggingface-hub",
                      "peft", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml", "tqdm")  # fmt: skip
MODEL_TYPE = "instructue-user-embedder"


class RegistryError(RuntimeError):
    """A registry action that cannot proceed; the message names the model, version and the fix."""


class GateFailed(RegistryError):
    pass


@dataclass(frozen=True)
class GateReport:
    """The parts of an evaluation report that registration reads."""

    path: Path
    passed: bool
    reasons: list[str]
    headline: dict[str, Any] = field(default_factory=dict)
    model_digest: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> GateReport:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(
                f"evaluation report {path} does not exist; run the evaluation first (it writes the report)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RegistryError(f"evaluation report {path} is not valid JSON ({e})") from None
        gate = raw.get("gate") if isinstance(raw, dict) else None
        if not isinstance(gate, dict) or not isinstance(gate.get("passed"), bool):
            raise RegistryError(
                f"evaluation report {path} has no gate verdict (`gate.passed` true/false); "
                "pass the JSON report the evaluation's gate wrote"
            )
        headline = raw.get("headline") or {}
        if not isinstance(headline, dict):
            raise RegistryError(f"evaluation report {path}: `headline` must be a mapping")
        digest = raw.get("model_digest")
        return cls(path, gate["passed"], [str(r) for r in gate.get("reasons") or []], headline,
                   digest if isinstance(digest, str) else None)  # fmt: skip


def recorded_evaluation(client, digest: str, into: Path) -> tuple[str, GateReport]:
    """The latest evaluation recorded in the store for the weights `digest`: its run id and report
    (downloaded with the files beside it into `into`).

    Raises:
        RegistryError: no run of any experiment carries the digest, or its report is of other weights.
    """
    from components.evaluation import EVAL_DIGEST_TAG

    experiments = [e.experiment_id for e in client.search_experiments()]
    where = f"tags.`{EVAL_DIGEST_TAG}` = '{digest}'"
    newest = ["attributes.start_time DESC"]
    runs = client.search_runs(experiments, where, order_by=newest, max_results=1) if experiments else []
    if not runs:
        raise RegistryError(
            f"no evaluation of these weights (sha256 {digest[:12]}) is recorded in {client.tracking_uri}; "
            "evaluate the model first (`instructue evaluate --model <folder>`, or `instructue retrain`)"
        )
    run_id = runs[0].info.run_id
    folder = Path(client.download_artifacts(run_id, REPORT_DIR, str(into)))
    report = GateReport.read(folder / REPORT_FILE)
    if report.model_digest != digest:
        raise RegistryError(f"the evaluation of run {run_id} is of other weights ({report.model_digest}); "
                            "evaluate the model again")  # fmt: skip
    return run_id, report


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    model_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def pinned_requirements() -> list[str]:
    """`package==version` of the inference packages installed here (local tags like +cpu dropped)."""
    pins = []
    for package in INFERENCE_PACKAGES:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


def provenance(root: Path | None, dataset_dir: Path) -> dict[str, str]:
    """Tags that tie a version to its data and code: DVC pointer md5, dataset content md5, git commit."""
    from components.ingestion import versioning

    tags = {"dataset": dataset_dir.name}
    try:
        tags["data.dvc_md5"] = versioning.read_pointer(root).md5 if root else "unversioned"
    except versioning.VersioningError:
        log.warning("no data.dvc under %s: the version records the dataset's content hash only", root)
        tags["data.dvc_md5"] = "unversioned"
    tags["data.dataset_md5"] = versioning.fingerprint_datasets(dataset_dir.parent).get(dataset_dir.name, "")
    tags["git.commit"], tags["git.dirty"] = _git_state(root or dataset_dir)
    return tags


def _git_state(where: Path) -> tuple[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        return "unknown", "unknown"
    return commit, str(dirty).lower()


def headline_tags(headline: dict[str, Any]) -> dict[str, str]:
    return {f"metric.{k}": "null" if v is None else str(v) for k, v in headline.items()}


def _report_files(report: Path) -> list[Path]:
    """The JSON report plus what the gate wrote beside it under the same stem (markdown, plots)."""
    siblings = [p for p in report.parent.glob(f"{report.stem}*") if p.is_file() and p != report]
    return [report, *sorted(siblings)]


def _base_model_artifacts(model_dir: Path, cache_dir: Path | None) -> dict[str, str]:
    from components.modeling import MODEL_FILE, InputMode, resolve_backbone, resolve_encoder

    config = json.loads((model_dir / MODEL_FILE).read_text(encoding="utf-8"))["config"]
    out = {"backbone": str(resolve_backbone(config["backbone"], cache_dir))}
    if config.get("input_mode", InputMode.MULTI_ENCODER.value) == InputMode.MULTI_ENCODER.value:
        out["encoder"] = str(resolve_encoder(config["encoder"], cache_dir))
    return out


def register(
    client,
    experiment_id: str,
    *,
    model_dir: str | Path,
    dataset_dir: str | Path,
    name: str,
    report_path: str | Path | None = None,
    root: Path | None = None,
    bundle_base_models: bool = True,
    cache_dir: Path | None = None,
    description: str | None = None,
    override_reason: str | None = None,
    me: Identity | None = None,
) -> Registered:
    """Log the model folder as a pyfunc and register it as a new version with alias `challenger`.

    Args:
        client: an `MlflowClient` bound to the tracking store and registry.
        experiment_id: where the registration run goes.
        model_dir: a model folder written by `save_model` (model.json, weights, tokenizer).
        report_path: optional: a report that must be the recorded evaluation's (same weights and
            verdict); the verdict itself is always read from the store.
        dataset_dir: `data/<dataset>/`; its schema.yaml travels with the model.
        name: the registered model (one per dataset, see `RegistrySettings.name_for`).
        root: the project root, for the DVC pointer and the git commit.

        override_reason: register although the recorded gate did not pass (or none is recorded);
            recorded on the version with the user and the evaluation run.
        me: the acting user (`team.whoami`; default: `acting_user` of the client's store, unverified);
            on a team server it needs the trainer role. Recorded as `registered_by`, and the
            evaluation run's `instructue.user` as `trained_by`: the four-eyes rule reads both.

    Raises:
        GateFailed: the recorded gate did not pass (nothing is logged).
        RegistryError: no evaluation of these weights is recorded, the given report is not it, or
            the model folder is unusable.
    """
    from mlflow.entities import LoggedModelOutput, Metric, Param

    from components.modeling import MODEL_FILE, ModelFolderError, model_digest
    from components.registry.records import input_example
    from components.registry.served import ServedEmbedder
    from components.registry.team import Action, Identity, require

    model_dir, dataset_dir = Path(model_dir).resolve(), Path(dataset_dir).resolve()
    if not (model_dir / MODEL_FILE).is_file():
        raise RegistryError(f"{model_dir} is not a model folder ({MODEL_FILE} is missing)")
    me = me or Identity(acting_user(client.tracking_uri), authenticated=False)
    require(me, Action.REGISTER, name)
    if override_reason is not None and not override_reason.strip():
        raise RegistryError("an override needs a reason (--override-reason '...'); it is recorded")
    try:
        digest = model_digest(model_dir)
    except ModelFolderError as e:
        raise RegistryError(str(e)) from None
    downloads = Path(tempfile.mkdtemp(prefix="instructue-register-"))
    try:
        eval_run, report = recorded_evaluation(client, digest, downloads)
    except RegistryError:
        if override_reason is None:
            shutil.rmtree(downloads, ignore_errors=True)
            raise
        eval_run, report = None, None  # registered on the override alone, and recorded as such
    try:
        if report_path is not None:
            given = GateReport.read(report_path)
            if given.model_digest != digest:
                raise RegistryError(
                    f"report {report_path} is not an evaluation of {model_dir} (its weights' sha256 is "
                    f"{digest[:12]}, the report's {str(given.model_digest)[:12]}); nothing was registered"
                )
            if report is not None and given.passed != report.passed:
                raise RegistryError(f"report {report_path} disagrees with the evaluation recorded in run "
                                    f"{eval_run}; nothing was registered")  # fmt: skip
        passed = bool(report and report.passed)
        if not passed and override_reason is None:
            reasons = "; ".join(report.reasons) if report else "no evaluation"
            raise GateFailed(
                f"{model_dir} did not pass its evaluation gate ({reasons or 'no reason given'}); only gated "
                f"models are registered. Improve the model and evaluate again (evaluation run {eval_run})"
            )
        card_path = dataset_dir / CARD_FILENAME
        card, tables = read_tables(dataset_dir)
        artifacts = {"model": str(model_dir), "card": str(card_path)}
        if bundle_base_models:
            artifacts.update(_base_model_artifacts(model_dir, cache_dir))

        # the folder must load and embed before anything is logged: a broken version never registers
        served = ServedEmbedder.from_paths(
            model_dir, card_path, artifacts.get("backbone"), artifacts.get("encoder"), cache_dir
        )
        example = input_example(card, tables, max_events=min(5, served.model.config.max_events or 5))
        served.embed_records(example)
        tags = {**provenance(root, dataset_dir), "gate.passed": "true" if passed else "false",
                "gate.reasons": json.dumps(report.reasons if report else [])[:4000],
                "gate.evaluation_run": eval_run or "-", "model.digest": digest,
                **headline_tags(report.headline if report else {}), "registered_by": me.name,
                "trained_by": _trainer(client, eval_run) or "-"}  # fmt: skip
        if override_reason is not None:
            tags |= {"gate.override_reason": override_reason[:4000], "gate.override_by": me.name}

        run = client.create_run(experiment_id, run_name=f"register-{card.name}", tags=tags)
        run_id = run.info.run_id
        try:
            for file in _report_files(report.path) if report else []:
                client.log_artifact(run_id, str(file), REPORT_DIR)
            headline = report.headline if report else {}
            numeric = {k: float(v) for k, v in headline.items() if isinstance(v, int | float)}
            params = {"model_dir": str(model_dir), "dataset": card.name, "evaluation_run": eval_run or "-",
                      "bundle_base_models": str(bundle_base_models)}  # fmt: skip
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, 0, 0) for k, v in numeric.items()],
                params=[Param(k, v[:6000]) for k, v in params.items()],
            )
            model_id = _log_pyfunc(client, experiment_id, run_id, artifacts, card, served.dim, example)
            client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
            version = _new_version(client, name, model_id, run_id, tags, description or _describe(card))
            client.set_registered_model_alias(name, CHALLENGER, version)
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        log.info("registered %s version %s (alias %s)", name, version, CHALLENGER)
        return Registered(name, version, run_id, model_id)
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


def _trainer(client, eval_run: str | None) -> str | None:
    """Who ran the training (and evaluation) run the verdict came from: its `instructue.user` tag."""
    return client.get_run(eval_run).data.tags.get(USER_TAG) if eval_run else None


def _log_pyfunc(client, experiment_id, run_id, artifacts, card: DatasetCard, dim: int, example) -> str:
    """Save the pyfunc locally from code, upload it as a LoggedModel; returns its model id."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from components.registry.records import signature

    logged = client.create_logged_model(
        experiment_id, name="model", source_run_id=run_id, model_type=MODEL_TYPE
    )
    try:
        with tempfile.TemporaryDirectory(prefix="instructue-pyfunc-") as tmp:
            code = Path(tmp) / "code" / "components"
            shutil.copytree(COMPONENTS_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            local = Path(tmp) / "model"
            named = _stage(artifacts, Path(tmp) / "staged")
            meta = Model(
                artifact_path=logged.artifact_location,
                run_id=run_id,
                model_uuid=logged.model_id,
                model_id=logged.model_id,
            )
            mlflow.pyfunc.save_model(
                path=str(local),
                python_model=str(PYFUNC_FILE),
                artifacts=named,
                code_paths=[str(code)],
                signature=signature(card, dim),
                input_example=example,
                pip_requirements=pinned_requirements(),
                mlflow_model=meta,
            )
            for cache in local.rglob("__pycache__"):
                shutil.rmtree(cache, ignore_errors=True)
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def _stage(artifacts: dict[str, str], staged: Path) -> dict[str, str]:
    """Hard links (copies across file systems) of the artifacts under stable names: MLflow names each
    artifact after its source's basename and refuses symlinks."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    staged.mkdir(parents=True)
    out = {}
    for key, source in artifacts.items():
        source = Path(source).resolve()
        target = staged / (key if source.is_dir() else source.name)
        if source.is_dir():
            shutil.copytree(source, target, copy_function=link, ignore=shutil.ignore_patterns(".*"))
        else:
            link(str(source), str(target))
        out[key] = str(target)
    return out


def _new_version(client, name: str, model_id: str, run_id: str, tags: dict, description: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, description=f"InstructUE user embeddings: {description}. Gated versions only."
        )
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # the logged model's own location, not `models:/<id>`: MLflow's SQL registry resolves such a
    # source through the global tracking URI, not this client's
    source = client.get_logged_model(model_id).artifact_location
    mv = client.create_model_version(
        name, source=source, run_id=run_id, tags=tags, model_id=model_id, description=description
    )
    return str(mv.version)


def _describe(card: DatasetCard) -> str:
    return f"dataset {card.name}; sources {', '.join(s.name for s in card.sources)}"
