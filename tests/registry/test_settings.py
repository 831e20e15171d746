"""Registry settings and request records: the shipped file loads, bad input names the fix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.registry.records import RecordError, instructions_of, records_from_tables, tables_from_records
from components.registry.settings import RegistrySettings
from tests.conftest import make_tables

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_shipped_registry_settings_load_with_local_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    settings = RegistrySettings.load(REPO)
    assert settings.name_for("movielens-100k") == "instructue-movielens-100k"
    assert settings.tracking(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert settings.registry(tmp_path) == settings.tracking(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert settings.registry(tmp_path) == "http://mlflow:5000"


@pytest.mark.parametrize(
    ("raw", "message"), [("colour: red\n", "colour"), ("model_name: fixed\n", "{dataset}")]
)
def test_invalid_registry_settings_are_refused(tmp_path, raw, message):
    path = tmp_path / "registry.yaml"
    path.write_text(raw)
    with pytest.raises(ValueError, match=message):
        RegistrySettings.load(tmp_path, path)


def test_records_round_trip_to_profiles_and_instructions(tiny_card):
    from components.modeling.profile import build_profiles

    tables = make_tables(tiny_card)
    records = records_from_tables(tiny_card, tables, [3, 1])
    again = tables_from_records(tiny_card, records)
    want = build_profiles(tiny_card, tables, [3, 1])
    got = build_profiles(tiny_card, again, [0, 1])
    assert [p.events for p in got] == [p.events for p in want]
    assert again.users["tier"].tolist() == tables.users.set_index("user_id").loc[[3, 1], "tier"].tolist()

    frame = pd.DataFrame({"task": ["churns", None], "instruction": [None, "Free text?"]})
    assert instructions_of(tiny_card, frame) == [tiny_card.task("churns").instruction, "Free text?"]
    with pytest.raises(RecordError, match="no task 'nope'"):
        instructions_of(tiny_card, pd.DataFrame({"task": ["nope"]}))
    with pytest.raises(RecordError, match="not both"):
        instructions_of(tiny_card, pd.DataFrame({"task": ["churns"], "instruction": ["x"]}))
    with pytest.raises(RecordError, match="list of event texts"):
        tables_from_records(tiny_card, pd.DataFrame({"clicks": ["just one string"]}))
