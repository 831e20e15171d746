"""`instructue retrain` reads its profile once (issue 28): the CLI loads and validates it, the flow
gets it resolved and validates it without loading it again."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import components.run_config as run_config
from flows.cli import app

pytestmark = pytest.mark.unit


def test_a_retrain_loads_the_profile_exactly_once(monkeypatch, tmp_path):
    calls: list[str] = []
    real = run_config.load_run

    def counting(name, overrides=None):
        calls.append(str(name))
        return real(name, overrides)

    monkeypatch.setattr(run_config, "load_run", counting)
    seen: dict = {}

    class Finished:
        def result(self):
            raise SystemExit(0)  # stop after the flow's call: only the loading is under test

    def flow(**kwargs):  # the real flow validates `config` and loads nothing (tests/flows/test_retrain.py)
        seen.update(kwargs)
        return Finished()

    import flows.retrain

    monkeypatch.setattr(flows.retrain, "retrain_flow", flow)
    result = CliRunner().invoke(
        app, ["retrain", "--profile", "tiny", "--set", "steps=3", "--root", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    assert calls == ["tiny"]
    assert seen["config"]["train"]["steps"] == 3 and seen["config"]["train"]["profile"] == "tiny"
    assert "merge" in seen["config"] and "merge" not in seen["config"]["train"]
