"""`instructue train` through the Prefect flow: a tiny run, tracked in MLflow, loadable by `embed`."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from components.ingestion import ingest
from components.userqa.synthesize import synthesize
from components.userqa.writers import TemplateWriter
from flows.cli import app
from tests.conftest import as_raw, make_tables

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def test_train_cli_trains_tracks_and_the_model_embeds(tiny_card, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q", progress=False)
    missing = runner.invoke(app, ["train", "--profile", "tiny", "--dataset", "tiny", "--root", str(tmp_path)])
    assert missing.exit_code == 2 and "instructue synthesize tiny" in missing.output
    synthesize(tmp_path / "data" / "tiny", TemplateWriter(), progress=False)

    args = ["train", "--profile", "tiny", "--dataset", "tiny", "--root", str(tmp_path),
            "--set", "steps=3", "--set", "log_every=1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "runs" / "tiny-tiny" / "model"
    assert f"model folder: {model_dir}" in result.output and "trained tiny for 3 steps" in result.output

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("instructue-training").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss_cl")] == [1, 2, 3]

    out = tmp_path / "emb.parquet"
    embedded = runner.invoke(app, ["embed", "--dataset", "tiny", "--model", str(model_dir), "--root",
                                   str(tmp_path), "--out", str(out)])  # fmt: skip
    assert embedded.exit_code == 0, embedded.output
    assert len(pd.read_parquet(out)) == 20


def test_train_cli_rejects_bad_profiles_and_overrides(tmp_path):
    runner = CliRunner()
    for args, message in [
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--profile", "tiny", "--set", "lr=-1"], "lr"),
        (["--profile", "tiny", "--set", "nonsense"], "key=value"),
        (["--profile", "tiny", "--processes", "0"], "--processes"),
    ]:
        result = runner.invoke(app, ["train", *args, "--root", str(tmp_path)])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
