"""Registry integrity beyond tests/registry/test_promote.py (threads racing, gate override, rollback
chain): promotions racing from separate processes, every non-"true" gate verdict refused, and a
promotion that fails half-way leaving the last good champion in place for rollback and retry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.registry.promote import alias_version, promote, rollback
from components.registry.register import CHAMPION, RegistryError
from tests.registry.conftest import MODEL_NAME, copy_version

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

PROMOTER = """
import sys, time
from pathlib import Path
from components.registry.promote import promote
from components.registry.settings import RegistrySettings
name, db, locks, version, go = sys.argv[1:6]
settings = RegistrySettings(tracking_uri=f"sqlite:///{db}", lock_dir=locks)
client = settings.client(Path(db).parent)
while not Path(go).exists():  # all processes start promoting at the same moment
    time.sleep(0.01)
promote(client, name, version, f"r{version}", "race", Path(locks))
"""


def test_promotions_racing_in_separate_processes_leave_one_champion(client, registered, settings, tmp_path):
    locks = settings.locks(tmp_path)
    promote(client, MODEL_NAME, "1", "ana", "first", locks)
    candidates = [copy_version(client, registered) for _ in range(3)]
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", PROMOTER, MODEL_NAME, str(tmp_path / "mlflow.db"), str(locks), v, str(go)],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for v in candidates
    ]  # fmt: skip
    go.touch()  # the processes poll for `go`: this releases them together
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs

    champion = alias_version(client, MODEL_NAME, CHAMPION)
    holders = [v for v in ["1", *candidates] if CHAMPION in client.get_model_version(MODEL_NAME, v).aliases]
    assert holders == [champion] and champion in candidates
    chain, v = [], champion
    while v:  # each promotion saw the one before it: the chain visits every version once
        chain.append(v)
        v = client.get_model_version(MODEL_NAME, v).tags.get("previous_champion")
    assert sorted(chain) == sorted(["1", *candidates]) and chain[-1] == "1"


GATES = ["false", "True", "yes", "1", "", None]  # None: no gate tag at all


def test_no_gate_verdict_but_true_makes_a_champion_without_override(client, registered, settings, tmp_path):
    locks = settings.locks(tmp_path)
    for gate in GATES:  # one store for all verdicts: each store copy costs seconds
        bad = copy_version(client, registered, gate=gate)
        for override in (None, "  "):
            with pytest.raises(RegistryError, match="--override-reason"):
                promote(client, MODEL_NAME, bad, "ana", "looks fine", locks, override_reason=override)
        assert alias_version(client, MODEL_NAME, CHAMPION) is None, gate
        assert "promoted_by" not in client.get_model_version(MODEL_NAME, bad).tags, gate


def test_a_promotion_failing_half_way_keeps_the_last_good_champion(
    client, registered, settings, tmp_path, monkeypatch
):
    locks = settings.locks(tmp_path)
    v2, v3 = copy_version(client, registered), copy_version(client, registered)
    promote(client, MODEL_NAME, "1", "ana", "first", locks)
    promote(client, MODEL_NAME, v2, "ana", "second", locks)

    real = type(client).set_registered_model_alias

    def dies_on_v3(self, name, alias, version):
        if str(version) == v3:
            raise ConnectionError("registry went away")  # after the tags, before the alias moves
        return real(self, name, alias, version)

    monkeypatch.setattr(type(client), "set_registered_model_alias", dies_on_v3)
    with pytest.raises(ConnectionError):
        promote(client, MODEL_NAME, v3, "ana", "third", locks)
    assert alias_version(client, MODEL_NAME, CHAMPION) == v2  # the last good state
    monkeypatch.setattr(type(client), "set_registered_model_alias", real)

    assert rollback(client, MODEL_NAME, "bo", "undo v2", locks).version == "1"
    assert alias_version(client, MODEL_NAME, CHAMPION) == "1"
    # a retry after the failure records the champion it actually replaced
    promote(client, MODEL_NAME, v3, "ana", "third, again", locks)
    assert client.get_model_version(MODEL_NAME, v3).tags["previous_champion"] == "1"
    assert rollback(client, MODEL_NAME, "bo", "undo v3", locks).version == "1"
