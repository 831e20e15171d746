"""DVC versioning of data/: a push from one git repository and a pull into its clone give the same bytes.

Every test works in its own git repository and DVC remote under tmp_path; nothing touches the
project's own `.dvc/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from components.ingestion import versioning
from components.ingestion.versioning import VersioningError
from flows.cli.data_versions import data_app

pytestmark = pytest.mark.integration


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    git(path, "config", "user.name", "test")
    git(path, "config", "user.email", "test@example.invalid")
    return path


def write_dataset(data: Path, name: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder = data / name
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": np.arange(10), "x": rng.normal(size=10)}).to_parquet(folder / "users.parquet")
    pd.DataFrame(
        {"user_id": np.repeat(np.arange(10), 3), "text": [f"e{seed}-{i}" for i in range(30)]}
    ).to_parquet(folder / "events.parquet")
    (folder / "schema.yaml").write_text(f"name: {name}\n")


def file_bytes(data: Path) -> dict[str, bytes]:
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path) -> Path:
    root = git_repo(tmp_path / "project")
    write_dataset(root / "data", "tiny", seed=0)
    write_dataset(root / "data", "other", seed=1)
    return root


def test_push_commit_clone_pull_round_trips_bytes_and_fingerprints(project, tmp_path):
    remote = tmp_path / "remote"
    assert versioning.ensure_dvc_repo(project) is True
    versioning.set_remote(project, str(remote))
    version = versioning.version_data(project)
    assert version.dvc_file == project / "data.dvc" and version.md5.endswith(".dir")
    assert version.nfiles == 6 and set(version.datasets) == {"tiny", "other"}
    pushed = versioning.push(project)
    assert pushed.files == 7  # six files and the folder's listing
    assert "nothing to push" in str(versioning.push(project))
    assert versioning.commit_pointer(project, "data: tiny + other") is not None
    assert versioning.commit_pointer(project, "data: again") is None  # nothing changed

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    assert not (clone / "data").exists()
    assert versioning.read_pointer(clone).md5 == version.md5
    before = versioning.status(clone)
    assert before.not_pulled and "not in cache" in "; ".join(before.workspace)

    pulled = versioning.pull(clone)
    assert pulled.files == 6 and "data (added)" in pulled.changed  # a pull counts files only
    assert file_bytes(clone / "data") == file_bytes(project / "data")
    assert versioning.fingerprint_datasets(clone / "data") == version.datasets
    pointer = versioning.read_pointer(clone)
    assert (pointer.md5, pointer.nfiles, pointer.size) == (version.md5, version.nfiles, version.size)
    after = versioning.status(clone)
    assert after.workspace == [] and (after.not_pushed, after.not_pulled, after.missing) == (0, 0, 0)


def test_default_remote_is_per_user_so_a_second_clone_pulls_with_plain_dvc(project, tmp_path, monkeypatch):
    monkeypatch.delenv(versioning.REMOTE_ENV)
    home = tmp_path / "home"  # `~` of the committed config, for this process and the `dvc` CLI below
    monkeypatch.setenv("HOME", str(home))
    versioning.ensure_dvc_repo(project)
    config = (project / ".dvc" / "config").read_text()
    assert "url = ~/.cache/instructue/dvc-remote" in config and str(tmp_path) not in config
    assert "analytics = false" in config and "check_update = false" in config
    version = versioning.version_data(project)
    versioning.push(project)
    assert (home / ".cache" / "instructue" / "dvc-remote" / "files").is_dir()
    versioning.commit_pointer(project, "data v1")

    clone = tmp_path / "clone"  # a second clone on the same machine: no setup, plain `dvc pull`
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([str(dvc), "pull", "-q"], cwd=clone, check=True, env={**os.environ, "HOME": str(home)})
    assert file_bytes(clone / "data") == file_bytes(project / "data")
    assert versioning.fingerprint_datasets(clone / "data") == version.datasets
    assert git(clone, "status", "--porcelain") == ""


def test_the_environment_replaces_the_default_remote_without_touching_config(project, tmp_path):
    versioning.ensure_dvc_repo(project)
    before = (project / ".dvc" / "config").read_text()
    versioning.version_data(project)
    pushed = versioning.push(project)
    assert pushed.remote == versioning.ENV_REMOTE and (tmp_path / "dvc-remote" / "files").is_dir()
    assert (project / ".dvc" / "config").read_text() == before
    assert not (project / ".dvc" / "config.local").exists()


def test_same_content_same_md5_and_one_byte_changes_it(project):
    versioning.ensure_dvc_repo(project)
    first = versioning.version_data(project)
    assert versioning.version_data(project) == first

    events = project / "data" / "tiny" / "events.parquet"
    raw = bytearray(events.read_bytes())
    raw[-10] ^= 1
    events.write_bytes(bytes(raw))
    assert "data: modified" in versioning.status(project).workspace
    second = versioning.version_data(project)
    assert second.md5 != first.md5
    assert second.datasets["tiny"] != first.datasets["tiny"]
    assert second.datasets["other"] == first.datasets["other"]
    assert versioning.read_pointer(project).md5 == second.md5


def test_fingerprint_ignores_hidden_temp_folders_and_depends_on_names(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, "a")
    prints = versioning.fingerprint_datasets(data)
    (data / ".a.tmp-1234").mkdir()
    (data / ".a.tmp-1234" / "x").write_text("half-written")
    assert versioning.fingerprint_datasets(data) == prints
    (data / "a" / "schema.yaml").rename(data / "a" / "card.yaml")
    assert versioning.fingerprint_datasets(data)["a"] != prints["a"]


def test_clear_errors_without_git_dvc_data_or_pointer(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(VersioningError, match="not a git repository: run `git init`"):
        versioning.ensure_dvc_repo(bare)
    assert not (bare / ".dvc").exists()
    with pytest.raises(VersioningError, match="is not a DVC repository"):
        versioning.version_data(git_repo(tmp_path / "nodvc"))
    with pytest.raises(VersioningError, match="nothing is versioned yet"):
        versioning.read_pointer(tmp_path / "nodvc")
    assert versioning.ensure_dvc_repo(bare, no_scm=True) is True
    with pytest.raises(VersioningError, match="nothing to version: .* run `instructue ingest`"):
        versioning.version_data(bare)


def test_cli_remote_push_status_pull_and_user_errors(project, tmp_path, monkeypatch):
    monkeypatch.delenv(versioning.REMOTE_ENV)  # the remote this test configures, not the environment's
    runner = CliRunner()
    remote = tmp_path / "remote"
    set_remote = runner.invoke(data_app, ["remote", str(remote), "--root", str(project)])
    assert set_remote.exit_code == 0, set_remote.output
    assert f"default DVC remote 'local' -> {remote}" in set_remote.output
    versioning.version_data(project)

    status = runner.invoke(data_app, ["status", "--root", str(project)])
    assert status.exit_code == 0 and "objects: 7 not pushed" in status.output
    push = runner.invoke(data_app, ["push", "--root", str(project)])
    assert push.exit_code == 0 and "pushed 7 object(s) to remote 'local'" in push.output

    (project / "data" / "tiny" / "events.parquet").unlink()
    pull = runner.invoke(data_app, ["pull", "--root", str(project)])
    assert pull.exit_code == 0, pull.output
    assert (project / "data" / "tiny" / "events.parquet").is_file()

    nodvc = git_repo(tmp_path / "nodvc")
    cases = [
        (["status", "--root", str(nodvc)], "is not a DVC repository"),
        (["push", "--root", str(nodvc)], "is not a DVC repository"),
        (["pull", "--root", str(tmp_path / "nowhere")], "is not a DVC repository"),
        (["push", "--remote", "nowhere", "--root", str(project)], "DVC remote 'nowhere' is not configured"),
        (["remote", "", "--root", str(project)], "remote URL is empty"),
        (["remote", "/x", "--name", "bad name", "--root", str(project)], "remote name 'bad name'"),
    ]
    for args, message in cases:
        result = runner.invoke(data_app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and message in result.output, (args, result.output)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_parallel_calls_are_serialised_across_threads_and_processes(project):
    versioning.ensure_dvc_repo(project)
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda _: versioning.version_data(project), range(4)))
        statuses = list(pool.map(lambda _: versioning.status(project), range(4)))
    assert len({v.md5 for v in versions}) == 1 and all(s.workspace == [] for s in statuses)

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(project)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(VersioningError, match="timed out .* another process"),
            versioning.repo_lock(project, timeout=0.2),
        ):
            pass
        start = time.monotonic()
        versioning.version_data(project)  # waits for the other process instead of failing
        assert time.monotonic() - start > 0.5
    finally:
        holder.wait(timeout=30)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from components.ingestion.versioning import repo_lock
with repo_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(1.5)
"""
