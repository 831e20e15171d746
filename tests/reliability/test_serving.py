"""The scoring server under a bounded burst, and malformed requests, on one server for the module.

The server is the real scoring server (MLflow's scoring app behind our request bounds) of the champion (as in tests/registry/test_serve.py,
which checks a single request); here 200 requests, 16 at a time, must each get the embeddings the
model folder gives in-process, and every malformed request a 4xx with a message.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from components.ingestion.contract import read_tables
from components.registry.batch import ModelRef
from components.registry.promote import promote
from components.registry.records import records_from_tables
from components.registry.serve import serve_command
from components.registry.served import ServedEmbedder
from components.registry.settings import RegistrySettings
from tests.conftest import stop_process
from tests.registry.conftest import MODEL_NAME
from tests.registry.test_serve import free_port, wait_ready

pytestmark = pytest.mark.integration

BURST, CONCURRENCY = 200, 16


@pytest.fixture(scope="module")
def server(template_store, tiny_root, tmp_path_factory):
    """The champion served on loopback from a copy of the template store; yields its base URL."""
    db, _ = template_store
    folder = tmp_path_factory.mktemp("served-store")
    shutil.copy(db, folder / "mlflow.db")
    settings = RegistrySettings(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", lock_dir=str(folder / "locks")
    )
    promote(settings.client(folder), MODEL_NAME, "1", "ana", "serve it", settings.locks(folder))
    port = free_port()
    cmd, env = serve_command(ModelRef.parse(MODEL_NAME).uri, settings.tracking(folder), port=port)
    env["INSTRUCTUE_CACHE"] = str(folder / "cache")
    with (folder / "server.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}/ping", proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def bodies(tiny_root, tiny_model):
    """Ten distinct request bodies (1-3 users, universal, task or free instruction) and the vectors
    the model folder gives for each in-process."""
    card, tables = read_tables(tiny_root / "data" / "tiny")
    served = ServedEmbedder.from_paths(tiny_model, tiny_root / "data" / "tiny" / "schema.yaml",
                                       cache_dir=tiny_root / "cache")  # fmt: skip
    out = []
    for i in range(10):
        ids = [1 + (i + k) % 20 for k in range(1 + i % 3)]
        records = records_from_tables(card, tables, ids)
        records["task"] = [("churns", "likes_x", None)[(i + k) % 3] for k in range(len(ids))]
        records["instruction"] = [f"Will user {u} buy item {i}?" if t is None and i % 2 else None
                                  for u, t in zip(ids, records["task"], strict=True)]  # fmt: skip
        body = json.dumps({"dataframe_records": json.loads(records.to_json(orient="records"))}).encode()
        out.append((body, served.embed_records(records)))
    return out


def test_a_burst_of_concurrent_requests_is_answered_correctly(server, bodies):
    def one(i: int) -> tuple[int, int, float]:
        body, want = bodies[i % len(bodies)]
        status, raw = post(server, body)
        if status != 200:
            return i, status, float("inf")
        got = np.asarray(json.loads(raw)["predictions"], dtype=np.float32)
        return i, status, float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")

    start = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one, range(BURST)))
    elapsed = time.monotonic() - start
    assert [r for r in results if r[1] != 200] == []
    assert max(r[2] for r in results) < 1e-4, sorted(results, key=lambda r: -r[2])[:3]
    assert len(results) == BURST and elapsed < 300


def _records(**fields) -> bytes:
    record = {"clicks": ["Clicked a."], "searches": ["Searched b."], "age_days": 12.0, "tier": "a", **fields}
    return json.dumps({"dataframe_records": [record]}).encode()


MALFORMED = [
    ("not_json", b"{not json", "application/json", ""),
    ("not_utf8", b'{"dataframe_records": [{"clicks": ["caf\xe9"]}]}', "application/json", ""),
    ("wrong_content_type", _records(), "text/plain", "content types"),
    ("unsupported_charset", _records(), "application/json; charset=latin-1", "UTF-8"),
    ("no_records_key", b'{"rows": [{"clicks": ["Clicked a."]}]}', "application/json", ""),
    ("unknown_task", _records(task="likes_y"), "application/json", "has no task 'likes_y'"),
    ("task_and_instruction", _records(task="churns", instruction="Stay?"), "application/json", "not both"),
    ("source_as_text", _records(clicks="Clicked a."), "application/json", ""),
    ("number_as_text", _records(age_days="old"), "application/json", ""),
    # issue 27: bounded, checked bodies (every accepted record gets one prediction)
    ("nested_100k_deep", b'{"dataframe_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json",
     "deeper than"),
    ("body_of_20_mb", _records(clicks=["x" * 1000] * 20_000), "application/json", "limit"),
    ("one_empty_record", b'{"dataframe_records": [{}]}', "application/json", "nothing to embed"),
    ("two_empty_records", b'{"dataframe_records": [{}, {}]}', "application/json", "record 0"),
    ("unknown_column", _records(colour="red"), "application/json", "unknown field(s) ['colour']"),
    ("unknown_category", _records(tier="z"), "application/json", "'z' is not one of"),
    ("list_as_instruction", _records(instruction=["a", "b"]), "application/json", "must be a string"),
    ("too_many_records", json.dumps({"dataframe_records": [{"tier": "a"}] * 5000}).encode(), "application/json",
     "limit"),
]  # fmt: skip


@pytest.mark.parametrize(("id", "body", "content_type", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_request_gets_a_4xx_with_a_message(id, body, content_type, message, server):
    status, raw = post(server, body, content_type)
    assert 400 <= status < 500, (status, raw[:500])
    text = raw.decode("utf-8", "replace")
    with contextlib.suppress(json.JSONDecodeError, AttributeError):  # MLflow's JSON errors carry `message`
        text = json.loads(text).get("message", text)
    assert text.strip() and message in text, text[:1000]


@pytest.mark.parametrize("id, status", [("nested_100k_deep", 400), ("body_of_20_mb", 413),
                                        ("one_empty_record", 422), ("too_many_records", 413)])  # fmt: skip
def test_bounds_answer_with_their_own_status(id, status, server):
    _, body, content_type, _ = next(c for c in MALFORMED if c[0] == id)
    assert post(server, body, content_type)[0] == status


def test_the_server_still_answers_after_the_malformed_requests(server, bodies):
    with urllib.request.urlopen(f"{server}/ping", timeout=10) as r:
        assert r.status == 200
    body, want = bodies[0]
    status, raw = post(server, body)
    assert status == 200
    np.testing.assert_allclose(np.asarray(json.loads(raw)["predictions"]), want, atol=1e-4)
