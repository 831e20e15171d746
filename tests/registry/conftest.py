"""Fixtures for registry tests: a tiny ingested dataset, a saved tiny model, a fresh MLflow store.

The dataset and model are built once per module, and one gated version is registered once per
module into a template store; `registered` gives each test its own copy of that store's SQLite file
(the version's artifacts are shared and only read), so a test that promotes or rolls back starts
from a fresh registry without paying for another registration. Tests that register themselves use
`settings`/`client`: an empty store under tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from components.ingestion import ingest
from components.ingestion.card import DatasetCard
from components.registry.register import register
from components.registry.settings import RegistrySettings
from tests.conftest import TINY_CARD, as_raw, make_tables

MODEL_NAME = "instructue-tiny"


def write_report(
    path: Path, passed: bool = True, reasons: tuple[str, ...] = (), model_dir: Path | None = None
) -> Path:
    """A minimal evaluation report in the evaluation component's JSON shape (of `model_dir`'s weights)."""
    from components.modeling.factory import model_digest

    report = {
        "model_digest": model_digest(model_dir) if model_dir else None,
        "gate": {"passed": passed, "reasons": list(reasons)},
        "headline": {"mean_auc_universal": 0.71, "mean_auc_manual": 0.74, "mean_auc_tuned": None,
                     "best_baseline": "tabular", "best_baseline_mean_auc": 0.66},
        "tasks": {"likes_x": {"universal": {"auc": 0.7}}},
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report), encoding="utf-8")
    path.with_suffix(".md").write_text("# gate report\n", encoding="utf-8")
    return path


def record_evaluation(client, model_dir: Path, folder: Path, passed: bool = True,
                      reasons: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """What an evaluation leaves in the store: a run tagged with the weights' digest holding the report
    under `evaluation/` (in its own experiment, as `flows/evaluate.py` does). Returns the report."""
    from components.evaluation.tracking import EVAL_DIGEST_TAG
    from components.modeling.factory import model_digest

    report = write_report(folder / "report.json", passed, reasons, model_dir)
    found = client.get_experiment_by_name("instructue-evaluation")
    exp = found.experiment_id if found else client.create_experiment(
        "instructue-evaluation", artifact_location=(folder / "artifacts").as_uri())  # fmt: skip
    run_id = client.create_run(exp, tags={EVAL_DIGEST_TAG: model_digest(model_dir)}).info.run_id
    client.log_artifact(run_id, str(report), "evaluation")
    client.log_artifact(run_id, str(report.with_suffix(".md")), "evaluation")
    client.set_terminated(run_id)
    return report


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(tmp_path / "cache"))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A project root with data/tiny ingested (20 users, two sequence sources, two features)."""
    root = tmp_path_factory.mktemp("registry-root")
    card = DatasetCard.model_validate(TINY_CARD)
    ingest(as_raw(card, make_tables(card)), root / "data", root / "quarantine", progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_root, tiny_backbone, tiny_encoder) -> Path:
    from components.ingestion.contract import read_tables
    from components.modeling.config import ModelConfig
    from components.modeling.factory import build_model, save_model

    card, tables = read_tables(tiny_root / "data" / "tiny")
    config = ModelConfig(backbone=str(tiny_backbone), encoder=str(tiny_encoder), device="cpu")
    torch.manual_seed(0)
    model = build_model(card, tables.users, config, cache_dir=tiny_root / "cache")
    return save_model(model, tiny_root / "model")


@pytest.fixture
def settings(tmp_path) -> RegistrySettings:
    return RegistrySettings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=(tmp_path / "artifacts").as_uri(),
        lock_dir=str(tmp_path / "locks"),
    )


@pytest.fixture
def client(settings, tmp_path):
    return settings.client(tmp_path)


@pytest.fixture(scope="module")
def template_store(tiny_root, tiny_model, tmp_path_factory):
    """A store holding one gated version of `instructue-tiny` (alias challenger), built once."""
    folder = tmp_path_factory.mktemp("template-store")
    settings = RegistrySettings(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_root=(folder / "artifacts").as_uri()
    )
    client = settings.client(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSTRUCTUE_CACHE", str(folder / "cache"))
        record_evaluation(client, tiny_model, folder / "eval")
        version = register(
            client, settings.experiment_id(client, folder), model_dir=tiny_model,
            dataset_dir=tiny_root / "data" / "tiny", name=MODEL_NAME, root=tiny_root, cache_dir=folder / "cache",
        )  # fmt: skip
    return folder / "mlflow.db", version


@pytest.fixture
def registered(template_store, tmp_path):
    """This test's own copy of the template store (the `settings`/`client` fixtures point at it)."""
    db, version = template_store
    shutil.copy(db, tmp_path / "mlflow.db")
    return version


def copy_version(client, registered, gate: str | None = "true") -> str:
    """Another version of the same logged model (cheap: no new upload), with its own gate tag."""
    mv = client.get_model_version(registered.name, registered.version)
    tags = {} if gate is None else {"gate.passed": gate}
    return str(
        client.create_model_version(
            registered.name,
            source=mv.source,
            run_id=registered.run_id,
            tags=tags,
            model_id=registered.model_id,
        ).version
    )
