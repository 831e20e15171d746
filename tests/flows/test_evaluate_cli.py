"""`instructue evaluate` end to end on a tiny model: table, report files, MLflow run, exit status 0
when the gate passes, 1 when it fails, 2 on user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.integration

CHEAP = [
    "--set",
    "seeds=[0,1]",
    "--set",
    "variants=[universal,manual]",
    "--set",
    "baselines.names=[tabular,svd]",
]


@pytest.fixture(scope="module")
def tiny_model(qa_data, model_cache, tmp_path_factory) -> Path:
    from components.training.config import load_profile
    from components.training.trainer import train

    config = load_profile("tiny", ["steps=2", "tuner=tmole"])
    run = tmp_path_factory.mktemp("cli-eval-run") / "run"
    return train(config, qa_data, run, cache_dir=model_cache, progress=False).model_dir


@pytest.fixture
def root(qa_data, tmp_path, model_cache, monkeypatch) -> Path:
    """A project root whose data/ holds the synthetic dataset (linked, not copied)."""
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / qa_data.name).symlink_to(qa_data, target_is_directory=True)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args])


def test_evaluate_passes_writes_the_report_and_logs_to_mlflow(prefect_server, root, tiny_model):
    from mlflow.tracking import MlflowClient

    out = root / "report"
    result = invoke("--model", str(tiny_model), "--dataset", "synthetic-multisource", "--root", str(root),
                    "--report-dir", str(out), *CHEAP, "--set", "gate.auc_floor=0",
                    "--set", "gate.beat_best_baseline=false")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| task | universal | manual | tabular | svd |" in result.output
    assert "gate: PASSED" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["gate"]["passed"] is True and report["headline"]["mean_auc_tuned"] is None
    assert {"report_tsne.png", "report_roc.png", "report_tmole_routing.png"} <= {
        p.name for p in out.iterdir()
    }
    assert (root / ".cache" / "baselines").is_dir()
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("instructue-evaluation").experiment_id])
    assert run.data.tags["eval.gate"] == "passed"
    assert "eval/mean_auc_manual" in run.data.metrics


def test_evaluate_exits_1_when_the_gate_fails(prefect_server, root, tiny_model):
    result = invoke("--model", str(tiny_model), "--dataset", "synthetic-multisource", "--root", str(root),
                    *CHEAP, "--set", "gate.auc_floor=1.0", "--no-track")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "gate: FAILED" in result.output and "below the floor 1.0000" in result.output
    # default report folder: beside the model, in its run
    assert (tiny_model.parent / "evaluation" / "report.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope"], "run `instructue ingest nope` first"),
        (["--set", "nonsense=1"], "nonsense"),
        (["--set", "tasks=[nope]"], "nope"),
        (["--set", "gate.auc_floor=2"], "auc_floor"),
    ],
)
def test_evaluate_user_errors_exit_2(root, tiny_model, args, message):
    base = ["--model", str(tiny_model), "--dataset", "synthetic-multisource", "--root", str(root)]
    result = (
        invoke(*base, *args) if "--dataset" not in args else invoke(*base[:2], "--root", str(root), *args)
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_evaluate_refuses_a_folder_that_is_not_a_model(root, tmp_path):
    result = invoke("--model", str(tmp_path), "--dataset", "synthetic-multisource", "--root", str(root))
    assert result.exit_code == 2 and "not a model folder" in result.output
