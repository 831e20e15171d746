"""`embed-batch` and `synthesize` as sharded Prefect flows: one process, a 2-worker local Dask
cluster, and a run killed with SIGKILL then resumed all give the same output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from components.ingestion import ingest
from components.modeling.embed import read_embeddings
from flows.embed_batch import embed_batch_flow
from flows.sharding import ShardRunner
from flows.synthesize import synthesize_flow
from tests.conftest import as_raw, kill_when_parts, make_tables
from tests.registry.conftest import MODEL_NAME, registered, template_store, tiny_model, tiny_root  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
REPO = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, data_from: Path, n_users: int | None = None, card=None) -> Path:
    """A root whose registry.yaml points at this test's store, with data/tiny copied or made."""
    root = tmp_path / "project"
    if n_users is None:
        shutil.copytree(data_from, root / "data" / "tiny")
    else:
        ingest(as_raw(card, make_tables(card, n_users=n_users)), root / "data", root / "q", progress=False)
    (root / "mlruns_config").mkdir(parents=True)
    (root / "mlruns_config" / "registry.yaml").write_text(yaml.safe_dump({
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": (tmp_path / "art").as_uri(),
        "lock_dir": str(tmp_path / "locks"),
    }))  # fmt: skip
    return root


def _embed(root: Path, out: Path, runner: ShardRunner, shard_users: int = 6):
    state = runner.apply(embed_batch_flow)(
        model=f"{MODEL_NAME}/1", dataset="tiny", instructions=[None, "Will this user click x?"],
        out=str(out), shard_users=shard_users, root=str(root), return_state=True,
    )  # fmt: skip
    return state.result()


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["instruction", "user_id"], na_position="first").reset_index(drop=True)


def test_embed_batch_on_two_dask_workers_equals_one_process(registered, tiny_root, tmp_path):  # noqa: F811
    root = _project(tmp_path, tiny_root / "data" / "tiny")
    one = _embed(root, tmp_path / "one.parquet", ShardRunner())
    two = _embed(root, tmp_path / "two.parquet", ShardRunner(workers=2))
    assert one.summary["shards_computed"] == two.summary["shards_computed"] == 4  # 20 users / 6
    assert one.summary["workers"] == 1 and two.summary["workers"] == 2
    a, b = read_embeddings(tmp_path / "one.parquet"), read_embeddings(tmp_path / "two.parquet")
    pd.testing.assert_frame_equal(
        _sorted(a)[["user_id", "instruction"]], _sorted(b)[["user_id", "instruction"]]
    )
    diff = np.abs(np.stack(_sorted(a)["embedding"]) - np.stack(_sorted(b)["embedding"])).max()
    assert diff == 0.0
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    assert not (tmp_path / "one.parquet.parts").exists()

    again = _embed(root, tmp_path / "one.parquet", ShardRunner())
    assert again.skipped and again.rows == len(a)


def test_killed_embed_batch_recomputes_only_missing_shards(registered, tiny_root, tmp_path, tiny_card):  # noqa: F811
    root = _project(tmp_path, tiny_root, n_users=120, card=tiny_card)
    reference = _embed(root, tmp_path / "reference.parquet", ShardRunner(), shard_users=2)
    total = int(reference.summary["shards"])
    assert total == 60

    out = tmp_path / "killed.parquet"
    code = (
        "import sys; from flows.embed_batch import embed_batch_flow; "
        "embed_batch_flow(model=sys.argv[1], dataset='tiny', instructions=[None, 'Will this user click x?'], "
        "out=sys.argv[2], shard_users=2, root=sys.argv[3])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, f"{MODEL_NAME}/1", str(out), str(root)], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    done = kill_when_parts(proc, Path(str(out) + ".parts"), at_least=10)
    assert 10 <= done < total and not out.exists()

    resumed = _embed(root, out, ShardRunner(), shard_users=2)
    assert resumed.summary["shards_reused"] == done
    assert resumed.summary["shards_computed"] == total - done
    assert out.read_bytes() == (tmp_path / "reference.parquet").read_bytes()


def test_synthesize_on_two_dask_workers_equals_one_process(tiny_card, tmp_path):
    for name in ("one", "two"):
        ingest(as_raw(tiny_card, make_tables(tiny_card, n_users=60)), tmp_path / name / "data", tmp_path / "q",
               progress=False)  # fmt: skip
    config = {"chunk_users": 5, "paraphrases_per_user": 2}
    results = {}
    for name, runner in (("one", ShardRunner()), ("two", ShardRunner(workers=2))):
        state = runner.apply(synthesize_flow)(
            dataset="tiny", config=config, root=str(tmp_path / name), version=False, return_state=True
        )
        results[name] = state.result()[0]
    assert results["one"].records == results["two"].records > 0
    a = (tmp_path / "one" / "data" / "tiny" / "userqa.parquet").read_bytes()
    assert a == (tmp_path / "two" / "data" / "tiny" / "userqa.parquet").read_bytes()


def test_a_runner_takes_workers_or_an_address_not_both(monkeypatch):
    monkeypatch.delenv("INSTRUCTUE_DASK_ADDRESS", raising=False)
    assert ShardRunner.from_options().description == "one process"
    monkeypatch.setenv("INSTRUCTUE_DASK_ADDRESS", "tcp://scheduler:8786")
    assert ShardRunner.from_options().address == "tcp://scheduler:8786"
    assert ShardRunner.from_options(workers=2).address is None  # an option beats the environment
    with pytest.raises(ValueError, match="not both"):
        ShardRunner(workers=2, address="tcp://x:1")
