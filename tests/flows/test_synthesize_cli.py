"""`instructue synthesize` through the Prefect flow on a tiny ingested dataset."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
from typer.testing import CliRunner

from components.ingestion import ingest
from flows.cli import app
from tests.conftest import as_raw, make_tables

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def test_synthesize_cli_writes_userqa_versions_it_and_reports(tiny_card, tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q", progress=False)
    runner = CliRunner()
    result = runner.invoke(
        app, ["synthesize", "tiny", "--root", str(tmp_path), "--set", "paraphrases_per_user=2"]
    )
    assert result.exit_code == 0, result.output
    assert "records from 12 training users" in result.output and "activity_pattern" in result.output
    df = pd.read_parquet(tmp_path / "data" / "tiny" / "userqa.parquet")
    assert set(df["user_id"]) <= set(range(1, 21)) and not set(df["user_id"]) & {1, 5, 6, 10, 11, 15, 16, 20}
    assert (tmp_path / "data.dvc").exists()

    bad = runner.invoke(app, ["synthesize", "tiny", "--root", str(tmp_path), "--writer", "oracle"])
    assert bad.exit_code == 2 and "unknown writer 'oracle'" in bad.output
    missing = runner.invoke(app, ["synthesize", "nope", "--root", str(tmp_path)])
    assert missing.exit_code == 2 and "run `instructue ingest nope`" in missing.output
    bad_set = runner.invoke(app, ["synthesize", "tiny", "--root", str(tmp_path), "--set", "colour=1"])
    assert bad_set.exit_code == 2 and "colour" in bad_set.output
