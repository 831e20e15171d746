"""The real MLflow scoring server on loopback serves `models:/<name>@champion` embeddings."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from components.ingestion.contract import read_tables
from components.registry.batch import ModelRef
from components.registry.promote import promote
from components.registry.records import records_from_tables
from components.registry.serve import serve_command
from components.registry.served import ServedEmbedder
from tests.conftest import stop_process
from tests.registry.conftest import MODEL_NAME

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"the server did not answer {url} within {timeout:.0f} s")


def test_scoring_server_returns_champion_embeddings(client, registered, settings, tiny_root, tmp_path):
    promote(client, MODEL_NAME, "1", "ana", "serve it", settings.locks(tmp_path))
    card, tables = read_tables(tiny_root / "data" / "tiny")
    records = records_from_tables(card, tables, [2, 3])
    records["task"] = ["churns", None]
    body = {"dataframe_records": json.loads(records.to_json(orient="records"))}

    port = free_port()
    cmd, env = serve_command(ModelRef.parse(MODEL_NAME).uri, settings.tracking(tmp_path), port=port)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", proc)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions = np.asarray(json.loads(r.read())["predictions"], dtype=np.float32)
        bad = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps({"dataframe_records": [{"clicks": "x"}]}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=60)
        assert refused.value.code in (400, 422)
    finally:
        stop_process(proc)
        log.close()
    assert predictions.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(predictions, axis=1), 1.0, atol=1e-4)
    model = tiny_root / "model"
    want = ServedEmbedder.from_paths(model, tiny_root / "data" / "tiny" / "schema.yaml").embed_records(
        records
    )
    np.testing.assert_allclose(predictions, want, atol=1e-5)


def test_scoring_server_with_a_token_answers_401_without_it_and_never_logs_it(
    client, registered, settings, tiny_root, tmp_path, monkeypatch
):
    monkeypatch.delenv("INSTRUCTUE_SERVE_TOKEN", raising=False)
    promote(client, MODEL_NAME, "1", "ana", "serve it", settings.locks(tmp_path))
    card, tables = read_tables(tiny_root / "data" / "tiny")
    body = json.dumps(
        {"dataframe_records": json.loads(records_from_tables(card, tables, [2]).to_json(orient="records"))}
    )
    token = "tok-" + "7f3a9c" * 6
    token_file = tmp_path / "serve-token"
    token_file.write_text(token + "\n")

    port = free_port()
    cmd, env = serve_command(ModelRef.parse(MODEL_NAME).uri, settings.tracking(tmp_path), port=port,
                             token_file=token_file)  # fmt: skip
    assert token not in " ".join(cmd) and token not in env.values()
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)

    def post(headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json", **headers})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", proc)  # the health check stays open
        assert post({}) == 401
        assert post({"Authorization": "Bearer wrong-token-0123456789"}) == 401
        assert post({"Authorization": f"Bearer {token}"}) == 200
    finally:
        stop_process(proc)
        log.close()
    logged = log_path.read_text()
    assert "bearer token required" in logged and token not in logged
