"""`instructue register | promote | rollback | embed-batch` against a fresh store under tmp_path."""

from __future__ import annotations

import getpass

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from components.ingestion.contract import read_tables
from components.modeling.embed import UserEmbedder, read_embeddings
from components.modeling.factory import load_model
from flows.cli import app
from tests.registry.conftest import (  # noqa: F401 - fixtures
    record_evaluation,
    tiny_model,
    tiny_root,
    write_report,
)

pytestmark = pytest.mark.integration
NAME = "instructue-tiny"


@pytest.fixture
def project(tiny_root, tmp_path, monkeypatch):  # noqa: F811
    """The tiny root with its own registry.yaml pointing at a store under tmp_path."""
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(tmp_path / "cache"))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    config = tiny_root / "mlruns_config" / "registry.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(yaml.safe_dump({
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": (tmp_path / "art").as_uri(),
        "lock_dir": str(tmp_path / "locks"),
    }))  # fmt: skip
    return tiny_root


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _client(project):
    from components.registry.settings import RegistrySettings

    return RegistrySettings.load(project).client(project)


def test_register_promote_rollback_and_embed_batch(project, tiny_model, tmp_path):  # noqa: F811
    root = ["--root", project]
    register = ("register", "--model-dir", tiny_model, "--dataset", "tiny", *root)
    nothing = invoke(*register)
    assert nothing.exit_code == 2 and "no evaluation of these weights" in nothing.output
    record_evaluation(
        _client(project), tiny_model, tmp_path / "bad", passed=False, reasons=("below the floor",)
    )
    refused = invoke(*register)
    assert refused.exit_code == 2 and "below the floor" in refused.output
    forged = write_report(tmp_path / "forged" / "report.json", passed=True, model_dir=tiny_model)
    disagrees = invoke(*register, "--report", forged)
    assert disagrees.exit_code == 2 and "disagrees with the evaluation recorded" in disagrees.output

    report = record_evaluation(_client(project), tiny_model, tmp_path / "eval")  # a newer, passed one
    for expected, extra in (("1", ()), ("2", ("--report", report))):
        done = invoke(*register, *extra)
        assert done.exit_code == 0, done.output
        assert f"registered {NAME} version {expected}" in done.output

    ungated = invoke(
        "promote", "--model", NAME, "--version", "7", "--reviewer", "ana", "--reason", "x", *root
    )
    assert ungated.exit_code == 2 and "no version 7" in ungated.output
    for version in ("1", "2"):
        ok = invoke(
            "promote", "--model", NAME, "--version", version, "--reviewer", "ana", "--reason", "good", *root
        )
        assert ok.exit_code == 0, ok.output
    # a local store says once that it is unauthenticated, and records the OS user beside --reviewer
    assert "unauthenticated local store" in ok.output and "by ana" in ok.output
    tags = _client(project).get_model_version(NAME, "2").tags
    assert tags["promoted_by"] == "ana" and tags["promoted_by.os_user"] == getpass.getuser()
    assert tags["promoted_by.authenticated"] == "false"
    back = invoke("rollback", "--model", NAME, "--reviewer", "bo", "--reason", "v2 drifts", *root)
    assert back.exit_code == 0 and "champion is version 1 again (was 2)" in back.output

    out = tmp_path / "emb.parquet"
    batch = invoke("embed-batch", "--model", NAME, "--dataset", "tiny", "--task", "likes_x", "--universal",
                   "--split", "probe", "--out", out, *root)  # fmt: skip
    assert batch.exit_code == 0, batch.output
    assert f"from {NAME} version 1" in batch.output
    df = read_embeddings(out)
    card, tables = read_tables(project / "data" / "tiny")
    ids = tables.users.loc[tables.users["split"] == "probe", "user_id"].astype(int).tolist()
    assert len(df) == 2 * len(ids)
    instruction = card.task("likes_x").instruction  # the same instructions as the command: prefix reuse
    embedder = UserEmbedder(load_model(tiny_model, device="cpu"), card, tables)
    want = embedder.embed_many(ids, [None, instruction])[instruction]
    got = np.stack(df.loc[df["instruction"].notna(), "embedding"].to_numpy())
    np.testing.assert_allclose(got, want, atol=1e-5)

    missing = invoke("embed-batch", "--model", "nope@champion", "--dataset", "tiny", *root)
    assert missing.exit_code == 2 and "instructue register" in missing.output
