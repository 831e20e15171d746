"""Nothing phones home: importing `flows` (as a benchmark calling a flow directly does) turns every
analytics switch off before Prefect, Great Expectations or DVC can start, and keeps a user's value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.settings import SERVER_STARTUP_ENV

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SWITCHES = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false",
            "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip


def after_import(code: str, env: dict[str, str]) -> str:
    """The last line `code` prints in a fresh interpreter that imported the flows package first."""
    out = subprocess.run([sys.executable, "-c", f"import flows.retrain; {code}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def environment_after_import(env: dict[str, str]) -> dict[str, str]:
    return json.loads(after_import("import json, os; print(json.dumps(dict(os.environ)))", env))


def test_importing_the_flows_turns_analytics_off():
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    got = environment_after_import(env)
    assert {k: got.get(k) for k in SWITCHES} == SWITCHES


def test_a_value_the_user_set_is_kept():
    env = {**{k: v for k, v in os.environ.items() if k not in SWITCHES}, "DO_NOT_TRACK": "yes"}
    assert environment_after_import(env)["DO_NOT_TRACK"] == "yes"


def test_prefect_waits_longer_for_its_server_unless_the_user_said_otherwise():
    code = "from prefect.settings import get_current_settings as s; print(s().server.ephemeral.startup_timeout_seconds)"
    env = {k: v for k, v in os.environ.items() if k != SERVER_STARTUP_ENV}
    assert after_import(code, env) == "120"  # the value Prefect itself reads, not only the variable
    assert after_import(code, {**env, SERVER_STARTUP_ENV: "7"}) == "7"
