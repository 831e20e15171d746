"""Watch a scheduled deployment run end to end on this machine, then tear everything down.

    .venv/bin/python infra/prefect/scheduled_run.py --prepare --profile tiny \
        --entrypoint flows/train.py:train_flow --dataset synthetic-multisource
    .venv/bin/python infra/prefect/scheduled_run.py --profile tiny --dataset synthetic-multisource \
        --param 'options={n_users: 60}'                      # the retraining flow, end to end

Steps, each one a command a user would type (printed as it runs):
  1. `prefect server start` on a free loopback port, with a temporary PREFECT_HOME (SQLite);
  2. optionally (`--prepare`) ingest and synthesise a small synthetic dataset into the scratch project
     root the flow will use, for flows that expect data/ to exist (train);
  3. `instructue deploy` with a cron schedule that fires at the start of the next minute (the process
     work pool is created by it);
  4. `prefect worker start --pool ... --type process`;
  5. polls the API until the deployment's first flow run is final, printing each state it reaches
     (once the worker has picked that run up it pauses the deployment, so the every-minute cron
     starts nothing more), then the run's state history and log lines;
  6. stops the worker and the server and removes the temporary folders (unless --keep).
The flow runs with INSTRUCTUE_ROOT set to a scratch project (a fresh git repository), so nothing in
this checkout's data/, runs/ or mlruns/ changes. Exit status 0 only if the run ended Completed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: prefect and instructue live next to python
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    say("$ " + shlex.join(cmd) + f"   (log: {log.name})")
    out = log.open("w")
    # its own process group: stopping it also stops the uvicorn / flow-run children it started
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run(cmd: list[str], env: dict[str, str], head: int | None = None) -> None:
    """Run a command to its end and show its output (the first `head` lines of stdout, if given)."""
    say("$ " + shlex.join(cmd))
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        lines += done.stderr.strip().splitlines()
    for line in lines[:head] if head and done.returncode == 0 else lines:
        print(f"    {line}", flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} exited {done.returncode}")


def stop(proc: subprocess.Popen | None, what: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    say(f"stopped {what}")


def wait_healthy(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited {server.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the Prefect server at {url} did not answer within {timeout:.0f} s")


async def watch(deployment: str, timeout: float) -> bool:
    """Print every state the deployment's first flow run reaches; True if it ended Completed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        only_this = DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        (dep,) = await client.read_deployments(deployment_filter=only_this)
        deadline, seen, run, paused = time.monotonic() + timeout, None, None, False
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(
                deployment_filter=only_this, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1
            )
            if runs:
                run = runs[0]
                state = (run.state_type.value if run.state_type else "?", run.state_name)
                if state != seen:
                    when = f" (scheduled for {run.expected_start_time:%H:%M:%S})" if seen is None else ""
                    say(f"flow run {run.name}: {state[1]}{when}")
                    seen = state
                if state[0] != "SCHEDULED" and not paused:
                    # an every-minute cron keeps firing: one run shows it, so stop the schedule (the
                    # server drops the runs it had scheduled for the next minutes)
                    await client.pause_deployment(dep.id)
                    paused = True
                    say(f"paused deployment {deployment!r}: the first run is enough")
                if state[0] in FINAL:
                    break
            await asyncio.sleep(1)
        if run is None or seen is None or seen[0] not in FINAL:
            say(f"no final state within {timeout:.0f} s")
            return False
        say(f"state history of flow run {run.name} ({run.id}):")
        for s in sorted(await client.read_flow_run_states(run.id), key=lambda s: s.timestamp):
            stamp = f"{s.timestamp:%H:%M:%S.%f}"[:-3]
            print(f"    {stamp}  {s.name:<10} {s.message or ''}".rstrip(), flush=True)
        await asyncio.sleep(2)  # the flow run's last log lines reach the API in batches
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        say(f"its log lines in the API ({len(logs)}; INFO and above, last 8):")
        for line in [x for x in logs if x.level >= 20][-8:]:
            first = (line.message.splitlines() or [""])[0]  # a traceback's first line says enough
            print(f"    {line.timestamp:%H:%M:%S}  {line.name}: {first}"[:220], flush=True)
        return seen[0] == "COMPLETED"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entrypoint", default="flows/retrain.py:retrain_flow", help="path/to/file.py:flow")
    p.add_argument("--source", type=Path, default=REPO, help="folder the worker loads the code from")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--dataset", default=None, help="dataset parameter (default: prefect.yaml's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override key=value")
    p.add_argument("--param", action="append", default=[], help="other flow parameter key=value (YAML)")
    p.add_argument("--cron", default="* * * * *", help="the schedule; the default fires every minute")
    p.add_argument("--prepare", action="store_true", help="ingest + synthesise a small synthetic dataset")
    p.add_argument("--users", type=int, default=60, help="users of the --prepare dataset")
    p.add_argument("--root", type=Path, default=None, help="INSTRUCTUE_ROOT of the flow (default: scratch)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for a final state")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="instructue-scheduled-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    root = args.root or tmp / "project"
    if args.root is None:
        root.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        for key, value in (("user.name", "scheduled-run"), ("user.email", "scheduled-run@localhost")):
            subprocess.run(["git", "config", key, value], cwd=root, check=True)  # flows may commit data.dvc
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # poll often: the demo should not wait on the worker
        "INSTRUCTUE_ROOT": str(root),
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
    }
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "DO_NOT_TRACK")})
    say(f"temporary folder {tmp}; project root of the flow run {root}")
    server = worker = None
    started = time.monotonic()
    try:
        server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                        "--no-ui"], env, tmp / "server.log")  # fmt: skip
        wait_healthy(api, server, timeout=120)
        say(f"server ready at {api} after {time.monotonic() - started:.0f} s")
        if args.prepare:
            cli = str(BIN / "instructue")
            users = f"n_users={args.users}"
            run([cli, "ingest", "synthetic-multisource", "-o", users, "--no-version"], env, head=2)
            run([cli, "synthesize", "synthetic-multisource", "--no-version"], env, head=2)
        pool = "scheduled-demo"
        deploy = [str(BIN / "instructue"), "deploy", "--pool", pool, "--cron", args.cron,
                  "--profile", args.profile, "--entrypoint", args.entrypoint, "--source", str(args.source),
                  "--deployment-name", pool, "--prefect-file", str(REPO / "prefect.yaml")]  # fmt: skip
        deploy += ["--dataset", args.dataset] if args.dataset else []
        deploy += [a for o in args.overrides for a in ("--set", o)]
        deploy += [a for o in args.param for a in ("--param", o)]
        run(deploy, env)
        worker_cmd = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"]
        worker = start([*worker_cmd, "--limit", "1"], env, tmp / "worker.log")
        ok = asyncio.run(watch(pool, args.timeout))
        if not ok:
            say("worker log (last 40 lines):")
            for line in (tmp / "worker.log").read_text(errors="replace").splitlines()[-40:]:
                print(f"    {line}", flush=True)
        say(f"{'COMPLETED' if ok else 'NOT COMPLETED'} after {time.monotonic() - started:.0f} s in all")
        return 0 if ok else 1
    finally:
        stop(worker, "the worker")
        stop(server, "the server")
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
