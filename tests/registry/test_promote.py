"""Reviewer promotion, refusals, rollback and concurrent promotions of the `champion` alias."""

from __future__ import annotations

import threading

import pytest

from components.registry.batch import ModelRef, resolve
from components.registry.promote import alias_version, promote, rollback
from components.registry.register import CHALLENGER, CHAMPION, RegistryError
from tests.registry.conftest import MODEL_NAME, copy_version

pytestmark = pytest.mark.integration


def test_promote_moves_champion_and_records_the_review(client, registered, settings, tmp_path):
    locks = settings.locks(tmp_path)
    change = promote(client, MODEL_NAME, "1", reviewer="ana", reason="beats the baseline", lock_dir=locks)
    assert change.previous is None and alias_version(client, MODEL_NAME, CHAMPION) == "1"
    tags = client.get_model_version(MODEL_NAME, "1").tags
    assert tags["promoted_by"] == "ana" and tags["promotion_reason"] == "beats the baseline"
    assert tags["promoted_at"].endswith("+00:00") and tags["previous_champion"] == ""
    assert alias_version(client, MODEL_NAME, CHALLENGER) is None  # the challenger became champion
    assert str(resolve(client, ModelRef.parse(MODEL_NAME)).version) == "1"  # a bare name means champion

    v2 = copy_version(client, registered)
    promote(client, MODEL_NAME, v2, reviewer="bo", reason="fresher data", lock_dir=locks)
    assert alias_version(client, MODEL_NAME, CHAMPION) == v2
    assert client.get_model_version(MODEL_NAME, v2).tags["previous_champion"] == "1"
    with pytest.raises(RegistryError, match="already the champion"):
        promote(client, MODEL_NAME, v2, reviewer="bo", reason="again", lock_dir=locks)


@pytest.mark.parametrize(("gate", "state"), [("false", "failed"), (None, "has no gate verdict")])
def test_ungated_versions_need_a_recorded_override(client, registered, settings, tmp_path, gate, state):
    locks = settings.locks(tmp_path)
    bad = copy_version(client, registered, gate=gate)
    with pytest.raises(RegistryError, match=f"gate {state}.*--override-reason"):
        promote(client, MODEL_NAME, bad, reviewer="ana", reason="looks fine", lock_dir=locks)
    assert alias_version(client, MODEL_NAME, CHAMPION) is None
    promote(client, MODEL_NAME, bad, "ana", "hotfix", locks, override_reason="gate data was stale")
    tags = client.get_model_version(MODEL_NAME, bad).tags
    assert tags["gate.override_reason"] == "gate data was stale" and tags["gate.override_by"] == "ana"


def test_rollback_restores_the_previous_champions_in_turn(client, registered, settings, tmp_path):
    locks = settings.locks(tmp_path)
    with pytest.raises(RegistryError, match="no champion"):
        rollback(client, MODEL_NAME, "ana", "oops", locks)
    v2, v3 = copy_version(client, registered), copy_version(client, registered)
    for v in ("1", v2, v3):
        promote(client, MODEL_NAME, v, "ana", f"ship {v}", locks)
    assert rollback(client, MODEL_NAME, "bo", "v3 drifts", locks).version == v2
    assert alias_version(client, MODEL_NAME, CHAMPION) == v2
    assert client.get_model_version(MODEL_NAME, v3).tags["rollback_reason"] == "v3 drifts"
    assert rollback(client, MODEL_NAME, "bo", "v2 too", locks).version == "1"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(client, MODEL_NAME, "bo", "and v1", locks)


def test_unknown_models_and_versions_name_the_fix(client, registered, settings, tmp_path):
    locks = settings.locks(tmp_path)
    with pytest.raises(RegistryError, match="no version 9"):
        promote(client, MODEL_NAME, "9", "ana", "x", locks)
    with pytest.raises(RegistryError, match="instructue register"):
        promote(client, "nope", "1", "ana", "x", locks)
    with pytest.raises(RegistryError, match="reviewer and a reason"):
        promote(client, MODEL_NAME, "1", "ana", " ", locks)
    with pytest.raises(RegistryError, match="NAME@ALIAS"):
        ModelRef.parse("a b@")


def test_concurrent_promotions_leave_one_champion_and_a_consistent_history(
    client, registered, settings, tmp_path
):
    locks = settings.locks(tmp_path)
    promote(client, MODEL_NAME, "1", "ana", "first", locks)
    candidates = [copy_version(client, registered) for _ in range(3)]
    barrier, errors = threading.Barrier(len(candidates)), []

    def go(version: str) -> None:
        try:
            barrier.wait()
            promote(settings.client(tmp_path), MODEL_NAME, version, f"r{version}", "race", locks)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    champion = alias_version(client, MODEL_NAME, CHAMPION)
    holders = [v for v in ["1", *candidates] if CHAMPION in client.get_model_version(MODEL_NAME, v).aliases]
    assert holders == [champion]
    # the promotions ran one after another: each previous_champion is the one promoted just before,
    # so following the chain from the champion visits every promoted version once, back to v1
    chain, v = [], champion
    while v:
        chain.append(v)
        v = client.get_model_version(MODEL_NAME, v).tags.get("previous_champion")
    assert sorted(chain) == sorted(["1", *candidates]) and chain[-1] == "1"
    for expected in chain[1:]:
        assert rollback(client, MODEL_NAME, "ana", "unwind", locks).version == expected
