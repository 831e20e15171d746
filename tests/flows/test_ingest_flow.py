"""The ingestion flow and the `instructue ingest` command, end to end on the real MovieLens-100k."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from components.ingestion import read_tables
from flows.cli import app
from tests.conftest import make_tables

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture
def project(tmp_path):
    """A fresh git repository standing in for a clone of the project."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for key, value in (("user.name", "test"), ("user.email", "test@example.invalid")):
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    return root


def test_cli_ingests_movielens_versions_it_and_prints_the_summary(project):
    result = CliRunner().invoke(app, ["ingest", "movielens-100k", "--root", str(project)])
    assert result.exit_code == 0, result.output
    for task in ("gender_female", "next4_scifi_liked", "future_drama_share_high"):
        assert task in result.output
    assert "train 566, probe 377" in result.output
    card, tables = read_tables(project / "data" / "movielens-100k")
    assert len(tables.users) == 943 and len(tables.events) == 100_000 and len(card.tasks) == 6
    assert (project / "data.dvc").exists()
    first = (project / "data.dvc").read_text()

    # Same input, same bytes, same DVC hash.
    again = CliRunner().invoke(app, ["ingest", "movielens-100k", "--root", str(project)])
    assert again.exit_code == 0, again.output
    assert (project / "data.dvc").read_text() == first


def test_user_errors_exit_2_with_one_message_and_no_traceback(project, tiny_card, tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(app, ["ingest", "netflix-prize", "--root", str(project)])
    assert unknown.exit_code == 2 and "unknown dataset reader 'netflix-prize'" in unknown.output

    bad_opt = runner.invoke(app, ["ingest", "movielens-100k", "-o", "colour=blue", "--root", str(project)])
    assert bad_opt.exit_code == 2 and "colour" in bad_opt.output

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "schema.yaml").write_text(tiny_card.to_yaml())
    tables = make_tables(tiny_card)
    tables.events = tables.events.drop(columns=["text"])
    for t, f in tables.items():
        f.to_parquet(folder / t.filename)
    # A real process: the message must reach the terminal without Prefect's tracebacks around it.
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "ingest",
        "parquet",
        "-o",
        f"path={folder}",
        "--root",
        str(project),
    ]
    broken = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "error: dataset 'tiny' does not follow the data contract" in broken.stderr
    assert "events.parquet lacks column(s) ['text']" in broken.stderr
    for out in (unknown.output, bad_opt.output, broken.stdout + broken.stderr):
        assert "Traceback" not in out
    assert not (project / "data" / "tiny").exists()


def test_flow_reports_quarantine_and_keeps_valid_rows(project, tiny_card, tmp_path):
    from flows.ingest import ingest_flow

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "schema.yaml").write_text(tiny_card.to_yaml())
    tables = make_tables(tiny_card)
    tables.events.loc[3, "source"] = "tiktok"
    for t, f in tables.items():
        f.to_parquet(folder / t.filename)
    summary, version = ingest_flow("parquet", {"path": str(folder)}, root=str(project), max_bad_share=0.5)
    assert summary.rows_quarantined["events"] == 1
    assert summary.rows_kept["events"] == len(tables.events) - 1
    q = pd.read_parquet(f"{summary.quarantine}/events.parquet")
    assert "not a sequence source" in q.loc[0, "reason"]
    assert version is not None


def test_dvc_round_trip_ingest_push_clone_pull_gives_identical_hashes(project, tiny_card, tmp_path):
    """Ingest through the flow, push to a temporary remote, clone, pull: same bytes, same hashes;
    ingesting the same input again in the clone reproduces the same DVC hash."""
    from components.ingestion import versioning
    from flows.ingest import ingest_flow

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "schema.yaml").write_text(tiny_card.to_yaml())
    for t, f in make_tables(tiny_card).items():
        f.to_parquet(folder / t.filename)
    remote = tmp_path / "remote"
    versioning.ensure_dvc_repo(project)
    versioning.set_remote(project, str(remote))
    _, version = ingest_flow("parquet", {"path": str(folder)}, root=str(project), commit=True, push=True)
    assert subprocess.run(["git", "status", "--porcelain", "data.dvc"], cwd=project, capture_output=True,
                          text=True).stdout == ""  # fmt: skip

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    versioning.pull(clone)
    assert versioning.fingerprint_datasets(clone / "data") == version.datasets
    assert versioning.read_pointer(clone).md5 == version.md5
    original = {p.name: p.read_bytes() for p in (project / "data" / "tiny").iterdir()}
    assert {p.name: p.read_bytes() for p in (clone / "data" / "tiny").iterdir()} == original

    _, again = ingest_flow("parquet", {"path": str(folder)}, root=str(clone))
    assert again.md5 == version.md5
