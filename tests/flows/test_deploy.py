"""Deployments: prefect.yaml's weekly retraining entry, `instructue deploy`, and a process worker running
what it registered; the slow test runs infra/prefect/scheduled_run.py (a real server and a cron fire)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.deploy import DeployError, DeploymentSpec, load_spec, require_server

REPO = Path(__file__).resolve().parents[2]

CHEAP_FLOW = """
import os
from prefect import flow

@flow(name="cheap-retrain")
def cheap_flow(dataset: str = "movielens-100k", profile: str = "quick", overrides: list[str] | None = None) -> str:
    return f"{dataset}|{profile}|{overrides}|{os.getcwd()}"
"""


@pytest.fixture
def cheap_source(tmp_path) -> Path:
    """A folder with a flow of the retraining flow's signature that finishes in a second."""
    source = tmp_path / "code"
    source.mkdir()
    (source / "cheap.py").write_text(textwrap.dedent(CHEAP_FLOW))
    return source


# -- the spec in prefect.yaml (unit) --------------------------------------------------------------------
@pytest.mark.unit
def test_prefect_yaml_schedules_the_retraining_flow_weekly_on_a_process_pool():
    spec = load_spec(REPO / "prefect.yaml")
    assert spec.entrypoint == "flows/retrain.py:retrain_flow"
    assert spec.cron == "0 3 * * 1" and spec.timezone == "UTC" and not spec.paused
    assert spec.pool == "instructue-process"
    assert set(spec.parameters) == {"dataset", "profile", "overrides"}
    assert spec.parameters["dataset"] == "movielens-100k" and spec.parameters["profile"] == "quick"


@pytest.mark.unit
def test_options_replace_fields_and_parameters_and_keep_the_rest():
    spec = load_spec(REPO / "prefect.yaml").with_options(
        cron="*/5 * * * *", pool="gpu-box", profile="tiny", overrides=["steps=5"], dataset=None, name=None
    )
    assert (spec.cron, spec.pool, spec.name) == ("*/5 * * * *", "gpu-box", "weekly")
    assert spec.parameters == {"dataset": "movielens-100k", "profile": "tiny", "overrides": ["steps=5"]}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "every monday"}, "'every monday' is not a cron expression"),
        ({"cron": "61 * * * *"}, "is not a cron expression"),
        ({"entrypoint": "flows/retrain.py"}, "entrypoint"),
        ({"pool": ""}, "pool"),
        ({"timezone": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA timezone"),
    ],
)
def test_bad_options_name_the_field(options, message):
    with pytest.raises(DeployError, match=message):
        load_spec(REPO / "prefect.yaml").with_options(**options)


@pytest.mark.unit
def test_prefect_file_problems_are_clear(tmp_path):
    with pytest.raises(DeployError, match="does not exist"):
        load_spec(tmp_path / "prefect.yaml")
    (tmp_path / "prefect.yaml").write_text("deployments:\n  - name: nightly\n    entrypoint: a.py:f\n")
    with pytest.raises(DeployError, match=r"no deployment 'weekly' \(it has: nightly\)"):
        load_spec(tmp_path / "prefect.yaml")
    with pytest.raises(DeployError, match="needs a cron schedule"):
        load_spec(tmp_path / "prefect.yaml", "nightly")


@pytest.mark.unit
def test_deploying_needs_a_reachable_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: None}),
        pytest.raises(DeployError, match="prefect server start"),
    ):
        require_server()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with pytest.raises(DeployError, match="does not answer"):
            require_server()
        result = CliRunner().invoke(app, ["deploy", "--root", str(REPO)])
    assert result.exit_code == 2 and "does not answer" in result.output


@pytest.mark.unit
def test_spec_fields_are_validated_at_construction():
    with pytest.raises(ValueError, match="cron"):
        DeploymentSpec(name="x", entrypoint="a.py:f", pool="p", cron="* *")


# -- a deployment on a Prefect server, run by a process worker (integration) -----------------------------
@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_cli_deploys_with_the_schedule_and_a_process_worker_runs_it(cheap_source, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    result = CliRunner().invoke(app, [
        "deploy", "--root", str(REPO), "--source", str(cheap_source), "--entrypoint", "cheap.py:cheap_flow",
        "--pool", "test-process", "--cron", "30 4 * * 2", "--profile", "tiny", "--set", "steps=3",
        "--deployment-name", "weekly-test",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "cheap-retrain/weekly-test" in result.output
        and "prefect worker start --pool test-process" in result.output
    )

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("cheap-retrain/weekly-test")
        pool = client.read_work_pool("test-process")
    assert pool.type == "process"
    assert deployment.work_pool_name == "test-process"
    assert [s.schedule.cron for s in deployment.schedules] == ["30 4 * * 2"]
    assert deployment.parameters == {"dataset": "movielens-100k", "profile": "tiny", "overrides": ["steps=3"]}
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(cheap_source.resolve())}}
    ]

    # What the schedule would start, started now; one worker poll runs it in a subprocess.
    flow_run = run_deployment("cheap-retrain/weekly-test", timeout=0)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "test-process", "--type", "process",
         "--run-once"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), (state, worker.stdout[-3000:])


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_cli_refuses_parameters_the_flow_does_not_take(tmp_path):
    source = tmp_path / "code"
    source.mkdir()
    (source / "other.py").write_text(
        "from prefect import flow\n\n@flow\ndef other(n: int = 1):\n    return n\n"
    )
    result = CliRunner().invoke(app, [
        "deploy", "--root", str(REPO), "--source", str(source), "--entrypoint", "other.py:other",
        "--pool", "test-process",
    ])  # fmt: skip
    assert result.exit_code == 2
    assert "do not fit other.py:other" in result.output and "dataset" in result.output


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_a_flow_that_cannot_be_loaded_is_named(tmp_path):
    (tmp_path / "broken.py").write_text("from prefect import flow\n\ndef not_a_flow():\n    pass\n")
    result = CliRunner().invoke(app, ["deploy", "--root", str(REPO), "--source", str(tmp_path),
                                      "--entrypoint", "broken.py:missing", "--pool", "test-process"])  # fmt: skip
    assert result.exit_code == 2 and "cannot load the flow broken.py:missing" in result.output


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_missing_entrypoint_file_is_named(tmp_path):
    result = CliRunner().invoke(app, ["deploy", "--root", str(REPO), "--source", str(tmp_path),
                                      "--pool", "test-process"])  # fmt: skip
    assert result.exit_code == 2 and "flows/retrain.py" in result.output and "does not exist" in result.output


# -- the documented script: its own server, a cron schedule firing, a process worker (slow) ----------------
@pytest.mark.slow
def test_scheduled_run_script_sees_a_cron_fired_run_complete(cheap_source):
    done = subprocess.run(
        [sys.executable, str(REPO / "infra" / "prefect" / "scheduled_run.py"), "--source", str(cheap_source),
         "--entrypoint", "cheap.py:cheap_flow", "--timeout", "150"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for expected in (
        "Scheduled",
        "Pending",
        "Running",
        "paused deployment 'scheduled-demo'",
        "Completed",
        "stopped the worker",
        "stopped the server",
    ):
        assert expected in done.stdout


def test_every_deployment_in_prefect_yaml_points_at_a_flow_that_takes_its_parameters():
    import importlib
    import inspect

    import yaml
    from prefect import Flow

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    names = set()
    for d in spec["deployments"]:
        module, _, name = d["entrypoint"].partition(":")
        fn = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(fn, Flow), d["name"]
        assert set(d.get("parameters") or {}) <= set(inspect.signature(fn.fn).parameters), d["name"]
        names.add(d["name"])
    assert {"weekly", "nightly-slow-tests"} <= names
