"""SIGKILL at a random moment, then a clean re-run: ingestion and registration.

Synthesis (tests/userqa/test_synthesize.py::test_killed_run_resumes_to_the_same_file) and training
(tests/training/test_trainer.py::test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run)
have their own. Each run here goes in a subprocess; the kill lands at a seeded random moment inside
the work (after the imports), the state it leaves is checked, and a re-run must give what an
uninterrupted run gives, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from components.ingestion import ingest, read_dataset
from tests.registry.conftest import MODEL_NAME, record_evaluation

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("RELIABILITY_KILL_SEED", "12"))


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def start(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def poll(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300.0) -> float:
    """Wait until `condition` holds (or the process ends); returns the monotonic time it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    return time.monotonic()


def kill_at_random(code: str, args: list[str], started: Callable[[], bool], work_s: float, rng) -> float:
    """Run `code`, wait until its work has `started`, SIGKILL it a random share of `work_s` later."""
    proc = start(code, *args)
    poll(started, proc)
    delay = rng.uniform(0.0, 0.8) * work_s
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself before the kill:\n{out}"
    return delay


def timed(code: str, args: list[str], started: Callable[[], bool]) -> float:
    """An uninterrupted run; returns the seconds from `started` to its end."""
    proc = start(code, *args)
    begun = poll(started, proc)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return time.monotonic() - begun


# -- ingestion ---------------------------------------------------------------------------------------
INGEST = """
import sys
from pathlib import Path
from components.ingestion import ingest, read_dataset
root, seed = Path(sys.argv[1]), int(sys.argv[2])
ingest(read_dataset("synthetic-multisource", n_users=1500, seed=seed), root / "data", root / "q",
       run_id="run", progress=False)
"""
NAME = "synthetic-multisource"


def _temp_exists(root: Path) -> Callable[[], bool]:
    return lambda: any((root / "data").glob(f".{NAME}.tmp-*"))


@pytest.mark.integration
def test_ingestion_killed_at_a_random_moment_keeps_the_old_version_and_reruns_to_the_same_bytes(tmp_path):
    rng = random.Random(SEED)
    reference = tmp_path / "reference"
    work_s = timed(INGEST, [str(reference), "0"], _temp_exists(reference))
    want = hashes(reference / "data" / NAME)

    killed = tmp_path / "killed"
    ingest(read_dataset(NAME, n_users=300, seed=1), killed / "data", killed / "q", progress=False)
    old = hashes(killed / "data" / NAME)  # the previous version, which the killed run replaces
    delay = kill_at_random(INGEST, [str(killed), "0"], _temp_exists(killed), work_s, rng)

    # the published folder is the old version or the new one, whole: never a mix or a partial file
    after_kill = hashes(killed / "data" / NAME)
    assert after_kill in (old, want), f"killed {delay:.2f} s into the work"
    ingest(read_dataset(NAME, n_users=1500, seed=0), killed / "data", killed / "q", run_id="run",
           progress=False)  # fmt: skip
    assert hashes(killed / "data" / NAME) == want
    assert [p.name for p in (killed / "data").iterdir()] == [NAME]  # no temp or old folder left


# -- registration ------------------------------------------------------------------------------------
REGISTER = """
import sys
from pathlib import Path
from components.registry.register import register
from components.registry.settings import RegistrySettings
store, model, dataset, root, name = map(Path, sys.argv[1:6])
settings = RegistrySettings(tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
                            artifact_root=(store / "artifacts").as_uri())
client = settings.client(store)
register(client, settings.experiment_id(client, store), model_dir=model,
         dataset_dir=dataset, name=str(name), root=root, cache_dir=store / "cache")
"""


def _store(folder: Path, model: Path):
    """A client and the registration experiment of a new store (migrated before any process races),
    holding the model's passed evaluation."""
    from components.registry.settings import RegistrySettings

    settings = RegistrySettings(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
                                artifact_root=(folder / "artifacts").as_uri())  # fmt: skip
    client = settings.client(folder)
    experiment = settings.experiment_id(client, folder)
    record_evaluation(client, model, folder / "eval")
    return client, experiment


def _challenger_artifacts(client) -> dict[str, str]:
    """File hashes of the challenger's logged model, without MLflow's per-run metadata."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    mv = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    folder = Path(local_file_uri_to_path(mv.source))
    assert (folder / "MLmodel").is_file()  # the upload finished
    return hashes(folder / "artifacts")


@pytest.mark.slow
def test_registration_killed_at_a_random_moment_reruns_to_the_same_challenger(
    tiny_root, tiny_model, tmp_path
):
    rng = random.Random(SEED)
    dataset = tiny_root / "data" / "tiny"

    def args(store: Path) -> list[str]:
        return [str(store), str(tiny_model), str(dataset), str(tiny_root), MODEL_NAME]

    def logging_started(store: Path) -> Callable[[], bool]:  # the run exists: the work has begun
        return lambda: (store / "artifacts").exists() and any((store / "artifacts").iterdir())

    reference = tmp_path / "reference"
    ref_client, _ = _store(reference, tiny_model)
    work_s = timed(REGISTER, args(reference), logging_started(reference))
    want = _challenger_artifacts(ref_client)

    killed = tmp_path / "killed"
    client, experiment = _store(killed, tiny_model)
    delay = kill_at_random(REGISTER, args(killed), logging_started(killed), work_s, rng)
    # whatever the killed run left, a version that carries an alias is complete: the alias moves last
    if client.search_registered_models():
        aliased = [mv for mv in client.search_model_versions(f"name='{MODEL_NAME}'")
                   if client.get_model_version(MODEL_NAME, mv.version).aliases]  # fmt: skip
        assert not aliased or _challenger_artifacts(client) == want, f"killed {delay:.2f} s in"
    from components.registry.register import register

    done = register(client, experiment, model_dir=tiny_model, dataset_dir=dataset,
                    name=MODEL_NAME, root=tiny_root, cache_dir=killed / "cache")  # the re-run  # fmt: skip
    assert _challenger_artifacts(client) == want
    assert client.get_model_version(MODEL_NAME, done.version).tags["gate.passed"] == "true"
    assert len(want) > 3 and any(k.endswith("trainable.safetensors") for k in want)
