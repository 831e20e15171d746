"""Nothing phones home: importing `flows` (as a benchmark calling a flow directly does) turns every
analytics switch off before Prefect, Great Expectations or DVC can start, and keeps a user's value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SWITCHES = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false",
            "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip


def environment_after_import(env: dict[str, str]) -> dict[str, str]:
    code = "import json, os, flows.retrain; print(json.dumps(dict(os.environ)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=300)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_flows_turns_analytics_off():
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    got = environment_after_import(env)
    assert {k: got.get(k) for k in SWITCHES} == SWITCHES


def test_a_value_the_user_set_is_kept():
    env = {**{k: v for k, v in os.environ.items() if k not in SWITCHES}, "DO_NOT_TRACK": "yes"}
    assert environment_after_import(env)["DO_NOT_TRACK"] == "yes"


def test_prefect_waits_longer_for_its_server_unless_the_user_said_otherwise():
    code = ("import flows; from prefect.settings import get_current_settings; "
            "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    for extra, want in (({}, "120"), ({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "7"}, "7")):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra}, capture_output=True,
                             text=True, check=True, timeout=300)  # fmt: skip
        assert out.stdout.strip().splitlines()[-1] == want
