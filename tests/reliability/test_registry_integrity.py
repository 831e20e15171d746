"""Registry integrity beyond tests/registry/test_promote.py (threads racing, gate override, rollback
chain): promotions racing from separate processes, every non-"true" gate verdict refused, and a
promotion that fails half-way leaving the last good champion in place for rollback and retry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.registry.promote import alias_version, promote, rollback
from components.registry.register import CHAMPION, RegistryError
from tests.registry.conftest import MODEL_NAME, copy_version, record_evaluation

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


# -- the gate cannot be forged (issue 27) --------------------------------------------------------------
def test_a_forged_report_does_not_register_a_model(client, settings, tiny_root, tiny_model, tmp_path):
    from components.registry.register import register

    experiment = settings.experiment_id(client, tmp_path)
    forged = tmp_path / "forged.json"  # what issue 27 tried: any JSON that says the gate passed
    forged.write_text(json.dumps({"gate": {"passed": True, "reasons": []}, "headline": {}}))
    with pytest.raises(RegistryError, match="no evaluation of these weights"):
        register(client, experiment, model_dir=tiny_model, report_path=forged,
                 dataset_dir=tiny_root / "data" / "tiny", name=MODEL_NAME)  # fmt: skip
    record_evaluation(client, tiny_model, tmp_path / "eval")  # now a real, passed evaluation exists
    with pytest.raises(RegistryError, match="is not an evaluation of"):  # ... but the file is not it
        register(client, experiment, model_dir=tiny_model, report_path=forged,
                 dataset_dir=tiny_root / "data" / "tiny", name=MODEL_NAME)  # fmt: skip
    assert client.search_registered_models() == []


def test_other_weights_do_not_inherit_an_evaluation(client, settings, tiny_root, tiny_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from components.registry.register import register

    record_evaluation(client, tiny_model, tmp_path / "eval")
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    state = load_file(str(other / "trainable.safetensors"))
    key = next(iter(state))
    state[key] = state[key] + 1.0  # one tensor changed: another model
    save_file(state, str(other / "trainable.safetensors"), metadata={"format": "instructue"})
    with pytest.raises(RegistryError, match="no evaluation of these weights"):
        register(client, settings.experiment_id(client, tmp_path), model_dir=other,
                 dataset_dir=tiny_root / "data" / "tiny", name=MODEL_NAME)  # fmt: skip


def test_an_override_registers_and_records_who_and_why(client, settings, tiny_root, tiny_model, tmp_path):
    import getpass

    from components.registry.register import register

    record_evaluation(client, tiny_model, tmp_path / "eval", passed=False, reasons=("below svd",))
    with pytest.raises(RegistryError, match="needs a reason"):
        register(client, settings.experiment_id(client, tmp_path), model_dir=tiny_model,
                 dataset_dir=tiny_root / "data" / "tiny", name=MODEL_NAME, override_reason="  ")  # fmt: skip
    done = register(client, settings.experiment_id(client, tmp_path), model_dir=tiny_model,
                    dataset_dir=tiny_root / "data" / "tiny", name=MODEL_NAME, root=tiny_root,
                    override_reason="demo for the review board")  # fmt: skip
    tags = client.get_model_version(MODEL_NAME, done.version).tags
    assert tags["gate.passed"] == "false"
    assert tags["gate.override_reason"] == "demo for the review board"
    assert tags["gate.override_by"] == getpass.getuser()
    assert tags["gate.evaluation_run"] != "-" and json.loads(tags["gate.reasons"]) == ["below svd"]
