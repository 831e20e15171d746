"""Safe loading: model folders with pickles or remote code are refused, `trust_remote_code` is never
enabled anywhere in the source, and the endpoint writer's key comes from the environment only and
never reaches a log, an error or an output file.

Base-model folders (pickle weights without safetensors, `auto_map` in config.json or
tokenizer_config.json) are covered by tests/modeling/test_assets.py; here: our own model folders.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from components.modeling.assets import AssetError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def _pickle(name: str):
    def add(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\x80\x04\x95\x00")  # a pickle protocol-4 header

    return add


def _remote_code(name: str):
    def add(folder: Path) -> None:
        file = folder / name
        data = json.loads(file.read_text()) if file.exists() else {}
        data["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
        file.write_text(json.dumps(data))

    return add


UNSAFE = [
    ("pickle_beside_the_weights", _pickle("extra.pkl"), "pickle file(s) (extra.pkl)"),
    ("torch_bin_in_the_folder", _pickle("pytorch_model.bin"), "pickle file(s) (pytorch_model.bin)"),
    ("pickle_in_the_tokenizer", _pickle("tokenizer/vocab.pt"), "pickle file(s) (vocab.pt)"),
    ("tokenizer_asks_for_remote_code", _remote_code("tokenizer/tokenizer_config.json"), "auto_map"),
    ("config_asks_for_remote_code", _remote_code("config.json"), "auto_map"),
]


@pytest.mark.parametrize(("id", "add", "message"), UNSAFE, ids=[c[0] for c in UNSAFE])
def test_unsafe_model_folder_is_refused_before_anything_loads(id, add, message, model_copy, tiny_root):
    from components.modeling.factory import load_model
    from components.registry.served import ServedEmbedder

    add(model_copy)
    with pytest.raises(AssetError) as e:
        load_model(model_copy, tiny_root / "cache")
    assert message in str(e.value) and str(model_copy) in str(e.value)
    with pytest.raises(AssetError, match=re.escape(message)):  # the serving path loads the same way
        ServedEmbedder.from_paths(model_copy, tiny_root / "data" / "tiny" / "schema.yaml")


def test_the_untouched_copy_loads(model_copy, tiny_root):
    from components.modeling.factory import load_model

    assert load_model(model_copy, tiny_root / "cache").dim > 0


def test_trust_remote_code_is_never_enabled():
    """No call passes trust_remote_code (any value) in the source the platform runs."""
    offenders = []
    for folder in ("components", "flows", "scripts", "benchmarks", "infra"):
        for file in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"trust_remote_code\s*[=:]", line):
                    offenders.append(f"{file.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders
    assert (REPO / "components").exists()  # the walk saw the source


# -- the endpoint writer's key ---------------------------------------------------------------------
SECRET = "sk-reliability-7e57-never-log-me"


def test_the_endpoint_key_has_no_parameter_only_an_environment_variable():
    from components.userqa.endpoint_writer import EndpointWriter

    params = inspect.signature(EndpointWriter).parameters
    assert "api_key_env" in params
    assert not [p for p in params if "key" in p.lower() and p != "api_key_env"]


def test_a_synthesis_run_with_a_key_never_logs_it(tiny_card, tmp_path, monkeypatch, caplog, capsys):
    """A whole synthesis against a loopback stub that first fails with the key echoed in its error
    body: the key is sent as a bearer token, and appears in no log record, output or written file."""
    from components.ingestion import ingest
    from components.userqa.endpoint_writer import EndpointWriter
    from components.userqa.synthesize import SynthesisConfig, synthesize
    from tests.conftest import as_raw, make_tables
    from tests.userqa.test_endpoint_writer import Server, reply

    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INSTRUCTUE_ENDPOINT_KEY", SECRET)
    ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q", progress=False)
    folder = tmp_path / "data" / "tiny"
    server = Server()
    server.script = lambda payload, n, headers: (
        reply(f"server error; you sent {headers['Authorization']}".encode(), status=500)
        if n == 1
        else reply("This user mostly clicked things.")
    )
    caplog.set_level(logging.DEBUG)
    try:
        writer = EndpointWriter(server.url, model="stub", timeout_s=5.0, backoff_s=0.0, max_retries=2)
        summary = synthesize(folder, writer, SynthesisConfig(max_users=4, paraphrases_per_user=1),
                             progress=False)  # fmt: skip
    finally:
        server.close()

    assert server.auth and set(server.auth) == {f"Bearer {SECRET}"}
    assert writer.retries > 0  # the failing replies were seen and logged
    assert any("retry" in r.getMessage() for r in caplog.records)
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    out = capsys.readouterr()
    assert SECRET not in logged + out.out + out.err + repr(writer) + repr(summary)
    for file in folder.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file
