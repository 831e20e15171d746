"""Data versions a second clone can restore (issue 27): `instructue ingest` pushes to the default
remote, plain `dvc pull` in another clone gives the same bytes, two ingests of the same source give
the same DVC hash, and `instructue data pull` rebuilds the embedded dataset when no remote holds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.ingestion import versioning
from flows.cli import app
from tests.ingestion.test_versioning import file_bytes, git, git_repo

REPO = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).parent / "dvc"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """The default remote under a HOME of this test's own (for this process and the `dvc` CLI)."""
    monkeypatch.delenv(versioning.REMOTE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.integration
def test_ingest_in_one_clone_and_dvc_pull_in_another_give_the_same_bytes(home, tmp_path):
    a = git_repo(tmp_path / "a")
    ingest = ["ingest", "synthetic-multisource", "-o", "n_users=60", "--commit", "--root", str(a)]
    first = CliRunner().invoke(app, ingest)
    assert first.exit_code == 0, first.output
    assert "pushed to the default DVC remote" in first.output
    pointer = versioning.read_pointer(a)

    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(a), str(b))
    subprocess.run([str(DVC), "pull", "-q"], cwd=b, check=True, env={**os.environ, "HOME": str(home)})
    assert file_bytes(b / "data") == file_bytes(a / "data")

    again = CliRunner().invoke(app, ingest)  # the same source and options: the same hash, no new commit
    assert again.exit_code == 0, again.output
    assert versioning.read_pointer(a).md5 == pointer.md5
    assert git(a, "status", "--porcelain", "data.dvc") == ""


@pytest.mark.slow
def test_data_pull_in_a_fresh_clone_rebuilds_movielens_to_the_committed_hash(home, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(REPO), str(clone))
    committed = versioning.read_pointer(clone).md5
    env = {**os.environ, versioning.REMOTE_ENV: str(tmp_path / "empty-remote")}  # nobody holds the data
    command = [str(Path(sys.executable).parent / "instructue"), "data", "pull", "--root", str(clone)]

    result = subprocess.run(command, env=env, capture_output=True, text=True)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "rebuilding movielens-100k" in output and "the same hash as data.dvc" in output
    assert versioning.read_pointer(clone).md5 == committed
    assert git(clone, "status", "--porcelain") == ""
    again = subprocess.run(command, env=env, capture_output=True, text=True)  # now the remote holds it
    assert again.returncode == 0 and "rebuilding" not in again.stdout + again.stderr, again.stderr
