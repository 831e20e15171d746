"""Team mode against a real `mlflow server --app-name basic-auth` on a loopback port (issue 32):
roles, identity from authentication, the four-eyes rule, refusals, and no secret in logs or tags."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from components.common import USER_TAG
from components.registry.promote import alias_version, promote, rollback
from components.registry.register import CHAMPION, register
from components.registry.team import (
    Action,
    Identity,
    Role,
    TeamError,
    TeamServer,
    add_user,
    four_eyes,
    list_users,
    server_command,
    whoami,
)
from tests.registry.conftest import MODEL_NAME, record_evaluation

ADMIN_PASSWORD = "admin-secret-0x5eed"
PASSWORDS = {"tr": "trainer-pass-123456", "rv": "reviewer-pass-12345", "vw": "viewer-pass-1234567"}
ROLES = {"tr": Role.TRAINER, "rv": Role.REVIEWER, "vw": Role.VIEWER}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A basic-auth tracking server on a free loopback port, its state in a temporary folder."""
    home = tmp_path_factory.mktemp("team")
    server = TeamServer(home=home, port=_free_port())
    argv, env = server_command(server, ADMIN_PASSWORD)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{server.uri}/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                pytest.fail(f"the team server exited: {(home / 'server.log').read_text()[-2000:]}")
        else:
            pytest.fail("the team server did not answer /health within 60 s")
        yield server, home / "server.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _as(monkeypatch, name: str, password: str | None = None):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", name)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or PASSWORDS.get(name, ADMIN_PASSWORD))


pytestmark = pytest.mark.integration


def test_roles_identity_four_eyes_and_refusals(team, tiny_root, tiny_model, tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    server, server_log = team
    uri = server.uri
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(tmp_path / "cache"))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    locks = tmp_path / "locks"

    _as(monkeypatch, "admin")
    for name, role in ROLES.items():
        add_user(uri, name, PASSWORDS[name], role)
    listed = {row["user"]: row for row in list_users(uri)}
    assert listed["admin"]["admin"] and listed["rv"]["roles"] == ["reviewer"]
    assert listed["tr"]["roles"] == ["trainer"] and listed["vw"]["roles"] == ["viewer"]
    with pytest.raises(TeamError, match="published default"):
        add_user(uri, "weak", "password1234", Role.VIEWER)

    def register_as(name: str):
        _as(monkeypatch, name)
        me = whoami(uri)
        exp = client.get_experiment_by_name("instructue-registry")
        exp_id = exp.experiment_id if exp else client.create_experiment("instructue-registry")
        return register(client, exp_id, model_dir=tiny_model, dataset_dir=tiny_root / "data" / "tiny",
                        name=MODEL_NAME, root=tiny_root, bundle_base_models=False, me=me,
                        cache_dir=tmp_path / "cache")  # fmt: skip

    # the trainer records an evaluation (its run says who) and registers a challenger
    _as(monkeypatch, "tr")
    record_evaluation(client, tiny_model, tmp_path / "eval")
    run = client.search_runs([client.get_experiment_by_name("instructue-evaluation").experiment_id])[0]
    client.set_tag(run.info.run_id, USER_TAG, "tr")
    v1 = register_as("tr").version
    tags = client.get_model_version(MODEL_NAME, v1).tags
    assert tags["registered_by"] == "tr" and tags["trained_by"] == "tr"

    # the trainer may not promote it (no reviewer role), nor roll back
    _as(monkeypatch, "tr")
    with pytest.raises(TeamError, match="user 'tr' may not promote instructue-tiny version 1: it needs the "
                       "reviewer role"):  # fmt: skip
        promote(client, MODEL_NAME, v1, None, "mine is good", locks, me=whoami(uri))
    # the viewer may neither promote nor register
    _as(monkeypatch, "vw")
    with pytest.raises(TeamError, match="user 'vw' may not promote .* reviewer role \\(has: viewer\\)"):
        promote(client, MODEL_NAME, v1, None, "looks fine", locks, me=whoami(uri))
    with pytest.raises(TeamError, match="user 'vw' may not register instructue-tiny: it needs the trainer"):
        register_as("vw")
    assert alias_version(client, MODEL_NAME, CHAMPION) is None

    # a wrong password is one clear line; so is a --reviewer that is not the authenticated user
    _as(monkeypatch, "rv", "not-the-password")
    with pytest.raises(TeamError, match="refused the credentials of user 'rv'.*wrong password"):
        whoami(uri)
    _as(monkeypatch, "rv")
    with pytest.raises(TeamError, match="--reviewer 'ana' is not the authenticated user 'rv'"):
        promote(client, MODEL_NAME, v1, "ana", "ok", locks, me=whoami(uri))

    # the reviewer promotes: the authenticated name is recorded
    change = promote(client, MODEL_NAME, v1, None, "beats the encoder", locks, me=whoami(uri))
    assert change.reviewer == "rv" and alias_version(client, MODEL_NAME, CHAMPION) == v1
    tags = client.get_model_version(MODEL_NAME, v1).tags
    assert tags["promoted_by"] == "rv" and tags["promoted_by.authenticated"] == "true"

    # four-eyes: the admin registers v2 and may not promote it without a recorded override
    v2 = register_as("admin").version
    _as(monkeypatch, "admin")
    with pytest.raises(
        TeamError, match="user 'admin' may not promote .* version 2: it trained or registered"
    ):
        promote(client, MODEL_NAME, v2, None, "ship it", locks, me=whoami(uri))
    promote(client, MODEL_NAME, v2, None, "ship it", locks, me=whoami(uri), four_eyes_override="rv is away")
    tags = client.get_model_version(MODEL_NAME, v2).tags
    assert tags["four_eyes.override_by"] == "admin" and tags["four_eyes.override_reason"] == "rv is away"
    # ... which only an admin may: a reviewer who registered a version may not override
    reviewer = Identity("rv", authenticated=True, roles=frozenset({"reviewer"}))
    with pytest.raises(TeamError, match="user 'rv' may not override the four-eyes rule"):
        four_eyes(reviewer, Action.PROMOTE, "v3", {"registered_by": "rv"}, "please")

    # rollback: refused to the trainer, done by the reviewer
    _as(monkeypatch, "tr")
    with pytest.raises(TeamError, match="user 'tr' may not roll back instructue-tiny: it needs the reviewer"):
        rollback(client, MODEL_NAME, None, "v2 drifts", locks, me=whoami(uri))
    _as(monkeypatch, "rv")
    assert rollback(client, MODEL_NAME, None, "v2 drifts", locks, me=whoami(uri)).version == v1
    assert client.get_model_version(MODEL_NAME, v2).tags["rolled_back_by"] == "rv"

    # no password in the server's log, our logs, or any tag of a version or run
    secrets = [ADMIN_PASSWORD, *PASSWORDS.values()]
    _as(monkeypatch, "admin")
    texts = [server_log.read_text(), caplog.text]
    for mv in client.search_model_versions(f"name = '{MODEL_NAME}'"):
        texts.append(repr(mv.tags))
    for exp in client.search_experiments():
        texts += [repr(r.data.tags) + repr(r.data.params) for r in client.search_runs([exp.experiment_id])]
    for secret in secrets:
        assert not any(secret in t for t in texts), "a password reached a log or a tag"


def test_the_server_refuses_mlflows_default_and_weak_admin_passwords(tmp_path, monkeypatch):
    from flows.cli import app

    server = TeamServer(home=tmp_path / "team")
    for weak in ("password1234", "short"):
        with pytest.raises(TeamError):
            server_command(server, weak)
    monkeypatch.setenv("INSTRUCTUE_ADMIN_PASSWORD", "password1234")
    result = CliRunner().invoke(app, ["team-server", "--home", str(tmp_path / "t2")])
    assert result.exit_code == 2 and "published default" in result.output
    monkeypatch.delenv("INSTRUCTUE_ADMIN_PASSWORD")
    result = CliRunner().invoke(app, ["team-server", "--home", str(tmp_path / "t3")])
    assert result.exit_code == 2 and "no admin password" in result.output
    with pytest.raises(TeamError, match="NO_PERMISSIONS or READ"):
        TeamServer(home=tmp_path, default_permission="EDIT")


def test_a_local_store_records_the_os_user_and_refuses_nothing(tmp_path):
    me = whoami(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not me.authenticated and me.name
    tags = {"registered_by": me.name, "trained_by": me.name}
    assert four_eyes(me, Action.PROMOTE, "v1", tags) == {}  # one person on one machine
