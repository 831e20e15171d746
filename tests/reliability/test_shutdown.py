"""A CLI run stopped from outside leaves nothing behind (issue 27): after `kill -9` or SIGTERM of
`instructue ingest` / `instructue synthesize`, Prefect's temporary server is gone too, SIGTERM marks
the flow run Crashed, and a re-run gives the uninterrupted run's bytes. Bad input prints its message
once; two ingests of one dataset at the same time both finish.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from components.ingestion import ingest, read_dataset
from tests.ingestion.test_versioning import git_repo

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "instructue")
NAME = "synthetic-multisource"


def hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def _server_children(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    servers = []
    for kid in kids:  # a short-lived child (git, a DVC helper) may end or be a zombie by now
        try:
            if "uvicorn" in " ".join(kid.cmdline()):
                servers.append(kid)
        except psutil.Error:
            continue
    return servers


def _start(args: list[str], root: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([CLI, *args, "--root", str(root)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _stop_mid_flow(args: list[str], root: Path, sig: int, working) -> tuple[subprocess.Popen, list[int]]:
    """Start the CLI, wait until its temporary server runs and `working()` holds, send `sig`."""
    proc = _start(args, root)
    deadline = time.monotonic() + 240
    servers: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:
        servers = servers or _server_children(proc.pid)
        if servers and working():
            break
        time.sleep(0.02)
    assert proc.poll() is None and servers, "the run ended (or never started its server) before the signal"
    os.kill(proc.pid, sig)
    proc.communicate(timeout=120)
    return proc, [s.pid for s in servers]


def _gone(pids: list[int], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _running(p)]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ingest_args() -> list[str]:
    return ["ingest", NAME, "-o", "n_users=4000", "-o", "seed=3", "--no-version"]


def _temp_folder(root: Path):
    return lambda: any((root / "data").glob(f".{NAME}.tmp-*"))


def test_kill_9_of_ingest_leaves_no_server_and_a_rerun_gives_the_same_bytes(tmp_path):
    root = git_repo(tmp_path / "project")
    proc, servers = _stop_mid_flow(_ingest_args(), root, signal.SIGKILL, _temp_folder(root))
    assert proc.returncode == -signal.SIGKILL
    assert _gone(servers), f"Prefect's temporary server {servers} outlived the killed run"

    rerun = _start(_ingest_args(), root)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    reference = tmp_path / "reference"
    ingest(read_dataset(NAME, n_users=4000, seed=3), reference / "data", reference / "q", progress=False)
    assert hashes(root / "data" / NAME) == hashes(reference / "data" / NAME)


def test_sigterm_of_ingest_stops_the_server_and_marks_the_flow_run_crashed(tmp_path):
    root = git_repo(tmp_path / "project")
    proc, servers = _stop_mid_flow(_ingest_args(), root, signal.SIGTERM, _temp_folder(root))
    assert proc.returncode != 0
    assert _gone(servers)
    db = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute(
            "SELECT state_type FROM flow_run WHERE name IS NOT NULL ORDER BY created DESC LIMIT 1"
        ).fetchone()
    assert state in ("CRASHED", "FAILED"), state
    assert not any((root / "data").glob(f".{NAME}.tmp-*")) or not (root / "data" / NAME).exists()


def test_kill_9_of_synthesize_leaves_no_server_and_a_rerun_gives_the_same_file(tmp_path):
    roots = {k: git_repo(tmp_path / k) for k in ("killed", "reference")}
    for r in roots.values():
        ingest(read_dataset(NAME, n_users=600, seed=1), r / "data", r / "q", progress=False)
    args = ["synthesize", NAME, "--no-version"]
    killed = roots["killed"]
    proc, servers = _stop_mid_flow(args, killed, signal.SIGKILL, lambda: True)
    assert proc.returncode == -signal.SIGKILL and _gone(servers)

    for r in roots.values():
        run = _start(args, r)
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out
    want = (roots["reference"] / "data" / NAME / "userqa.parquet").read_bytes()
    assert (killed / "data" / NAME / "userqa.parquet").read_bytes() == want


def test_a_user_error_is_printed_once(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "schema.yaml").write_text("name: mine\nsources: 3\n")
    run = _start(["ingest", "parquet", "-o", f"path={folder}", "--no-version"], git_repo(tmp_path / "p"))
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 2, out
    assert out.count("is invalid") == 1 and out.count("error:") == 1, out
    assert "Traceback" not in out


def test_two_ingests_of_one_dataset_at_once_both_finish(tmp_path):
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            ingest(
                read_dataset(NAME, n_users=800, seed=seed), tmp_path / "data", tmp_path / "q", progress=False
            )
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    published = hashes(tmp_path / "data" / NAME)
    versions = []
    for seed in (1, 2):
        ref = tmp_path / f"ref{seed}"
        ingest(read_dataset(NAME, n_users=800, seed=seed), ref / "data", ref / "q", progress=False)
        versions.append(hashes(ref / "data" / NAME))
    assert published in versions  # one whole version, never a mix
    assert not list((tmp_path / "data").glob(f".{NAME}.tmp-*"))
