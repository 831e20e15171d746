"""Screenshots of team mode for the README (issue 32), in headless Chromium:

    .venv/bin/python scripts/team_screenshots.py --run-dir runs/<run> [--dataset movielens-100k]

Starts a throw-away team server (`instructue team-server`'s command) in a temporary folder with a
random admin password; adds a trainer and a reviewer; as the trainer records the run's evaluation and
registers its model (a real registration: the gate is read from the server's store), as the reviewer
promotes it; then photographs what a browser without credentials gets (`docs/team-login.png`) and
the champion version's page with its tags (`docs/team-champion-tags.png`). A desktop browser opens
its basic-auth dialog on the server's 401; headless Chromium has none, so both pictures go through a
loopback proxy: the first without credentials (the 401's text), the second adding the reviewer's
`Authorization` header. Needs `chromium` on PATH.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.evaluation import log_to_mlflow  # noqa: E402
from components.registry import Role, TeamServer, add_user, promote, register, server_command, whoami  # noqa: E402

# the version page's classic layout lists every tag
# and no scroll box may clip it (the tags table holds five rows and scrolls the rest)
OLD_REGISTRY_UI = (b"<head><script>localStorage.setItem("
                   b'"_mlflow_user_setting_dismiss_next_model_registry_ui", "true")</script>'
                   b"<style>*{max-height:none!important}</style>")  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen) -> None:
    for _ in range(240):
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit("the team server exited")
    raise SystemExit(f"{url} did not answer")


def _as(name: str, password: str) -> None:
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = name, password


def _proxy(upstream: str, header: str | None) -> http.server.ThreadingHTTPServer:
    """A loopback proxy for the screenshots: adds one Authorization header (GET and POST), or with
    None sends none and drops `WWW-Authenticate` from the answer, so headless Chromium renders the
    server's 401 text where a desktop browser would open its login dialog."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
            if header:
                headers["Authorization"] = header
            req = urllib.request.Request(
                upstream + self.path, data=body, method=self.command, headers=headers
            )
            try:
                resp = urllib.request.urlopen(req, timeout=30)
            except urllib.error.HTTPError as e:
                resp = e
            data = resp.read()
            if header and "text/html" in resp.headers.get("Content-Type", ""):
                data = data.replace(b"<head>", OLD_REGISTRY_UI, 1)
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                if k.lower() not in ("transfer-encoding", "connection", "content-length", "www-authenticate"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", _port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _shoot(url: str, out: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not on PATH (apt-get install -y chromium)")
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,2300", "--virtual-time-budget=25000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True, help="a retrain run: its evaluation/ and winner")
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--override-reason", help="register and promote a model whose gate failed (recorded)")
    args = p.parse_args()
    run_dir = args.run_dir.resolve()
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        admin = secrets.token_urlsafe(18)
        users = {"tom": secrets.token_urlsafe(18), "ana": secrets.token_urlsafe(18)}
        server = TeamServer(home=Path(tmp) / "team", port=_port())
        argv, env = server_command(server, admin)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(f"{server.uri}/health", proc)
            os.environ["MLFLOW_TRACKING_URI"] = server.uri
            _as("admin", admin)
            add_user(server.uri, "tom", users["tom"], Role.TRAINER)
            add_user(server.uri, "ana", users["ana"], Role.REVIEWER)
            client = MlflowClient(server.uri, server.uri)
            _as("tom", users["tom"])
            exp = client.create_experiment("instructue-evaluation")
            run_id = client.create_run(exp, tags={"instructue.user": "tom"}).info.run_id
            log_to_mlflow(client, run_id, report, run_dir / "evaluation")
            client.set_terminated(run_id)
            name = f"instructue-{args.dataset}"
            evaluated = Path(report["model_dir"])  # the folder the gate judged (the run's winner)
            if not evaluated.is_dir():
                evaluated = run_dir / evaluated.name
            done = register(client, client.create_experiment("instructue-registry"),
                            model_dir=evaluated, dataset_dir=ROOT / "data" / args.dataset, name=name,
                            root=ROOT, bundle_base_models=False, me=whoami(server.uri),
                            override_reason=args.override_reason)  # fmt: skip
            _as("ana", users["ana"])
            promote(client, name, done.version, None, "reviewed the evaluation report",
                    Path(tmp) / "locks", args.override_reason, me=whoami(server.uri))  # fmt: skip
            args.out.mkdir(parents=True, exist_ok=True)
            anonymous = _proxy(server.uri, None)
            _shoot(f"http://127.0.0.1:{anonymous.server_address[1]}/", args.out / "team-login.png")
            anonymous.shutdown()
            token = base64.b64encode(f"ana:{users['ana']}".encode()).decode()
            proxy = _proxy(server.uri, f"Basic {token}")
            port = proxy.server_address[1]
            _shoot(f"http://127.0.0.1:{port}/#/models/{name}/versions/{done.version}",
                   args.out / "team-champion-tags.png")  # fmt: skip
            proxy.shutdown()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
