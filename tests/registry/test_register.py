"""Gated registration: what a version carries, what is refused, and that it loads anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.ingestion.contract import read_tables
from components.modeling.embed import UserEmbedder
from components.modeling.factory import load_model
from components.registry.batch import ModelRef, download, load_served
from components.registry.promote import promote
from components.registry.records import input_example, records_from_tables
from components.registry.register import CHALLENGER, GateFailed, GateReport, RegistryError, register
from tests.registry.conftest import MODEL_NAME, record_evaluation

pytestmark = pytest.mark.integration


def folder_embeddings(tiny_root, tiny_model, ids, instruction=None):
    card, tables = read_tables(tiny_root / "data" / "tiny")
    model = load_model(tiny_model, device="cpu")
    return UserEmbedder(model, card, tables).embed(ids, instruction)


def test_register_creates_a_challenger_version_with_provenance_tags(client, registered, tiny_root):
    mv = client.get_model_version(MODEL_NAME, registered.version)
    assert registered.version == "1" and CHALLENGER in mv.aliases
    tags = mv.tags
    assert tags["gate.passed"] == "true" and tags["dataset"] == "tiny"
    assert tags["metric.mean_auc_universal"] == "0.71" and tags["metric.mean_auc_tuned"] == "null"
    assert tags["metric.best_baseline"] == "tabular"
    assert tags["data.dvc_md5"] == "unversioned"  # the tmp root has no data.dvc
    assert len(tags["data.dataset_md5"]) == 32 and tags["git.commit"]
    run = client.get_run(registered.run_id)
    assert run.data.metrics["mean_auc_manual"] == pytest.approx(0.74)
    reports = {Path(a.path).name for a in client.list_artifacts(registered.run_id, "evaluation")}
    assert reports == {"report.json", "report.md"}


def test_logged_model_has_signature_example_pins_and_no_pickles(client, registered, tmp_path):
    folder, _ = download(client, f"{MODEL_NAME}/1", tmp_path / "dl")
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", "requirements.txt", "input_example.json"} <= files
    assert {"artifacts/model/trainable.safetensors", "artifacts/model/model.json",
            "artifacts/schema.yaml", "artifacts/backbone/model.safetensors"} <= files  # fmt: skip
    assert "code/components/registry/served.py" in files
    # models-from-code: no pickled object anywhere (MLflow only records cloudpickle's version)
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".bin"))], files
    for f in folder.rglob("*"):
        if f.is_file() and f.suffix not in (".safetensors",):
            assert not f.read_bytes().startswith(b"\x80\x04\x95"), f"{f} looks like a pickle"
    mlmodel = (folder / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel and '"name": "clicks"' in mlmodel
    pins = (folder / "requirements.txt").read_text().split()
    assert all("==" in p for p in pins) and any(p.startswith("torch==") for p in pins)


def test_register_refuses_a_failed_gate_and_logs_nothing(client, settings, tiny_root, tiny_model, tmp_path):
    record_evaluation(client, tiny_model, tmp_path / "eval", passed=False, reasons=("regresses on churns",))
    with pytest.raises(GateFailed, match="regresses on churns"):
        register(client, settings.experiment_id(client, tmp_path), model_dir=tiny_model,
                 dataset_dir=tiny_root / "data" / "tiny", name=MODEL_NAME)  # fmt: skip
    assert client.search_registered_models() == []
    assert client.search_runs([settings.experiment_id(client, tmp_path)]) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("{", "not valid JSON"), ('{"headline": {}}', "no gate verdict")],
)
def test_unusable_reports_name_the_fix(tmp_path, content, message):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RegistryError, match=message):
        GateReport.read(path)


def test_load_by_alias_gives_the_folder_embeddings(
    client, registered, settings, tiny_root, tiny_model, tmp_path
):
    card, tables = read_tables(tiny_root / "data" / "tiny")
    ids = [1, 2, 3, 5, 6]
    records = records_from_tables(card, tables, ids)
    served, mv = load_served(client, f"{MODEL_NAME}@{CHALLENGER}", tmp_path / "dl")
    assert str(mv.version) == "1"
    np.testing.assert_allclose(
        served.embed_records(records), folder_embeddings(tiny_root, tiny_model, ids), atol=1e-5
    )
    task = card.task("churns")
    records["task"] = ["churns"] * len(ids)
    np.testing.assert_allclose(
        served.embed_records(records),
        folder_embeddings(tiny_root, tiny_model, ids, task.instruction),
        atol=1e-5,
    )


def test_champion_loads_in_a_fresh_process(client, registered, settings, tiny_root, tiny_model, tmp_path):
    promote(client, MODEL_NAME, registered.version, "ana", "first model", settings.locks(tmp_path))
    card, tables = read_tables(tiny_root / "data" / "tiny")
    example = input_example(card, tables, n=3)
    request = tmp_path / "request.json"
    request.write_text(json.dumps(example.to_dict(orient="records")))
    out = tmp_path / "out.json"
    script = (
        "import json, sys, pandas as pd, mlflow.pyfunc\n"
        f"m = mlflow.pyfunc.load_model('{ModelRef.parse(MODEL_NAME).uri}')\n"
        f"x = m.predict(pd.DataFrame(json.load(open({str(request)!r}))))\n"
        "import components\n"
        f"json.dump({{'emb': x.tolist(), 'code': components.__file__}}, open({str(out)!r}, 'w'))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    ids = example["user_id"].tolist()
    want = np.stack(
        [
            folder_embeddings(
                tiny_root, tiny_model, [u], card.task(t).instruction if isinstance(t, str) else None
            )[0]
            for u, t in zip(ids, example["task"], strict=True)
        ]
    )
    np.testing.assert_allclose(np.asarray(result["emb"]), want, atol=1e-5)
    # the project code came with the model version, not from this checkout
    assert "/code/components/" in result["code"], result["code"]
