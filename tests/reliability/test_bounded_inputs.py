"""Inputs with a bound (issue 27): a YAML alias bomb or an oversized file is refused before it can
expand, in well under a second and a few megabytes, with one clear message."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from components.common import bounded_yaml
from components.ingestion.card import CardError, DatasetCard
from components.training.config import ConfigError, load_profile
from flows.cli import app
from tests.conftest import TINY_CARD

pytestmark = pytest.mark.unit


def _bomb(levels: int = 9) -> str:
    """About 1 KB that a plain safe_load expands to 10**levels strings."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _refused_quickly(load, path: Path, error: type[Exception]) -> str:
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(error) as e:
        load(path)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1.0, seconds
    assert peak < 100 * 2**20, peak
    return str(e.value)


def test_alias_bomb_in_a_dataset_card_is_refused_in_under_a_second(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text(_bomb())
    assert len(path.read_bytes()) < 2048
    message = _refused_quickly(DatasetCard.load, path, CardError)
    assert "alias" in message and str(path) in message


def test_alias_bomb_in_a_profile_is_a_config_error(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert "alias" in _refused_quickly(load_profile, path, ConfigError)


def test_oversized_card_is_refused_unread(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(TINY_CARD) + "#" * (bounded_yaml.MAX_BYTES + 1))
    assert "limit" in _refused_quickly(DatasetCard.load, path, CardError)


def test_merge_key_alias_is_refused_too():
    with pytest.raises(bounded_yaml.YamlRefused, match=r"alias \(\*base\) on line 3"):
        bounded_yaml.loads("base: &base {a: 1}\nother:\n  <<: *base\n")


def test_plain_yaml_reads_as_before():
    text = yaml.safe_dump(TINY_CARD)
    assert bounded_yaml.loads(text) == yaml.safe_load(text)


def test_cli_with_a_bomb_card_exits_2_with_one_line(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "schema.yaml").write_text(_bomb())
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["ingest", "parquet", "-o", f"path={folder}", "--root", str(tmp_path)])
    assert time.perf_counter() - t0 < 30  # the CLI's imports included; the refusal itself is < 1 s
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "alias" in result.output, result.output


# -- scoring requests: checked before MLflow parses them (the server tests run them over HTTP) ---------
def test_json_depth_counts_brackets_outside_strings_only():
    from components.registry.records import json_depth

    assert json_depth(b'{"a": [1, {"b": "[[[[[\\"]]"}]}') == 3
    assert json_depth(b"[" * 50_000 + b"]" * 50_000) == 50_000  # no recursion: numpy over the bytes


def test_a_valid_request_counts_its_records(tiny_card):
    from components.registry.records import check_request

    body = (
        b'{"dataframe_split": {"columns": ["clicks", "tier"], "data": [[["Clicked a."], "b"], [null, "c"]]}}'
    )
    assert check_request(tiny_card, body) == 2


def test_serve_of_an_unknown_model_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from components.registry.scoring_app import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["models:/nope@champion", "--port", "1"]) == 2
    err = capsys.readouterr().err  # (a fresh store also logs MLflow's table creation before it)
    assert "Traceback" not in err and err.count("error:") == 1, err
    assert err.strip().splitlines()[-1].startswith("error: cannot serve models:/nope@champion"), err
