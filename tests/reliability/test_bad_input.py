"""The bad-input corpus beyond `tests/ingestion/test_validation.py`'s 27 row-level cases and its
table-level ones: more row-level defects (quarantined with a reason, no valid row lost), broken
folders and cards, run profiles, CLI arguments and request records. Each user error gets one clear
message that names the culprit; none ends in a traceback or a silently wrong result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from components.ingestion import ContractError, ingest, read_tables
from components.ingestion.card import CardError
from components.ingestion.contract import Table
from components.ingestion.parquet_folder import ParquetOptions, read_parquet_folder
from components.training.config import ConfigError, load_profile
from flows.cli import app
from tests.conftest import CASCADE, TINY_CARD, as_raw, cell, make_tables

pytestmark = pytest.mark.unit


# -- 1. row-level defects: quarantined with a reason, every valid row kept ------------------------
@dataclass
class RowCase:
    id: str
    mutate: Callable
    bad: dict[str, int]
    reason: str
    table: str


ROW_CASES = [
    RowCase("nan_label", cell("labels", 3, "label", np.nan, True), {"labels": 1}, "label is missing",
            "labels"),
    RowCase("infinite_label", cell("labels", 3, "label", np.inf, True), {"labels": 1}, "label must be 0 or 1",
            "labels"),
    RowCase("missing_task", cell("labels", 3, "task", None, True), {"labels": 1}, "task is missing",
            "labels"),
    RowCase("missing_source", cell("events", 4, "source", None, True), {"events": 1}, "source is missing",
            "events"),
    RowCase("surrogate_text", cell("events", 4, "text", "caf\udce9", True), {"events": 1}, "UTF-8", "events"),
    RowCase("text_of_wrong_type", cell("events", 4, "text", 42, True), {"events": 1}, "not valid UTF-8 text",
            "events"),
    RowCase("missing_ts", cell("events", 4, "ts", pd.NaT), {"events": 1}, "ts is missing", "events"),
    RowCase("minus_infinite_number", cell("users", 2, "age_days", -np.inf), CASCADE, "infinite", "users"),
    RowCase("category_of_wrong_type", cell("users", 2, "tier", 7, True), CASCADE, "tier is not text",
            "users"),
    RowCase("fractional_user_id", cell("users", 2, "user_id", 3.5, True), CASCADE, "not an integer",
            "users"),
    RowCase("nan_n_profile", cell("cutoffs", 6, "n_profile", np.nan, True), CASCADE, "no valid cut-off",
            "users"),
]  # fmt: skip


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.id)
def test_row_defect_is_quarantined_and_no_valid_row_is_lost(case, tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    case.mutate(tables)
    rows_in = {t.value: len(f) for t, f in tables.items()}

    summary = ingest(as_raw(tiny_card, tables), tmp_path / "data", tmp_path / "q", max_bad_share=1.0,
                     progress=False)  # fmt: skip

    bad = {t.value: case.bad.get(t.value, 0) for t in Table}
    assert summary.rows_quarantined == bad
    _, published = read_tables(tmp_path / "data" / "tiny")
    kept = {t.value: len(f) for t, f in published.items()}
    assert kept == {t: rows_in[t] - bad[t] for t in rows_in}  # rows lost = 0
    reasons = pq.read_table(f"{summary.quarantine}/{case.table}.parquet").column("reason").to_pylist()
    assert any(case.reason in r for r in reasons), reasons


# -- 2. whole-input defects: one ContractError / CardError naming the file and the fix ----------------
def _folder(root: Path, card: dict | None = None) -> Path:
    folder = root / "mine"
    folder.mkdir()
    (folder / "schema.yaml").write_text(yaml.safe_dump(card or TINY_CARD))
    from components.ingestion.card import DatasetCard

    for t, f in make_tables(DatasetCard.model_validate(TINY_CARD)).items():
        f.to_parquet(folder / t.filename)
    return folder


def _write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def _card(patch: dict):
    return lambda folder: (folder / "schema.yaml").write_text(yaml.safe_dump({**TINY_CARD, **patch}))


FOLDER_CASES = [
    ("empty_parquet_file", _write("events.parquet", b""), ContractError, "events.parquet is not a readable"),
    ("csv_named_parquet", _write("users.parquet", b"user_id,split\n1,train\n"), ContractError,
     "users.parquet is not a readable"),
    ("missing_card", lambda f: (f / "schema.yaml").unlink(), CardError, "does not exist"),
    ("non_utf8_card", _write("schema.yaml", b"name: caf\xe9\n"), CardError, "not valid YAML"),
    ("card_is_a_list", _write("schema.yaml", b"- tiny\n- card\n"), CardError, "must be a mapping"),
    ("card_field_of_wrong_type", _card({"text_max_chars": "many"}), CardError, "text_max_chars"),
    ("card_unknown_source_kind", _card({"sources": [{"name": "clicks", "kind": "stream", "template": "x"}]}),
     CardError, "kind"),
    ("missing_folder", lambda f: [p.unlink() for p in f.iterdir()] and f.rmdir(), ContractError,
     "does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("id", "breaks", "error", "message"), FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_broken_dataset_folder_is_one_clear_error(id, breaks, error, message, tmp_path):
    folder = _folder(tmp_path)
    breaks(folder)
    with pytest.raises(error, match=message):
        ingest(read_parquet_folder(ParquetOptions(path=folder)), tmp_path / "data", tmp_path / "q",
               progress=False)  # fmt: skip
    assert not (tmp_path / "data" / "tiny").exists()


# -- 3. run profiles: every problem is a ConfigError naming the key (beyond tests/training/test_config)
def _profile_file(content: bytes):
    def make(tmp_path: Path) -> tuple[str, list[str]]:
        path = tmp_path / "mine.yaml"
        path.write_bytes(content)
        return str(path), []

    return make


def _overrides(*items: str):
    return lambda tmp_path: ("tiny", list(items))


PROFILE_CASES = [
    ("infinite_lr", _overrides("lr=.inf"), "lr: Input should be a finite number"),
    ("nan_lr", _overrides("lr=.nan"), "lr"),
    ("steps_as_text", _overrides("steps=many"), "steps: Input should be a valid integer"),
    ("unknown_adapter", _overrides("tuner=moe"), "tuner: Input should be 'lora' or 'tmole'"),
    ("unknown_nested_key_in_file", _profile_file(b"steps: 3\nlora:\n  colour: blue\n"), "lora.colour"),
    ("override_not_yaml", _overrides("lora.targets=[q_proj"), "not valid YAML"),
    ("profile_not_yaml", _profile_file(b"steps: [3\n"), "not valid UTF-8 YAML"),
    ("profile_not_utf8", _profile_file(b"profile: caf\xe9\n"), "not valid UTF-8 YAML"),
    ("profile_is_a_list", _profile_file(b"- steps\n- 3\n"), "must be a mapping"),
    ("missing_profile_file", lambda tmp_path: (str(tmp_path / "nope.yaml"), []), "unknown profile"),
]  # fmt: skip


@pytest.mark.parametrize(("id", "make", "message"), PROFILE_CASES, ids=[c[0] for c in PROFILE_CASES])
def test_bad_profile_is_a_config_error_naming_the_key(id, make, message, tmp_path):
    profile, overrides = make(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_profile(profile, overrides)
    assert message in str(e.value)


# -- 4. CLI arguments: exit 2, one `error:` line, no traceback, nothing started --------------------
def _broken_profile(tmp_path: Path) -> str:
    path = tmp_path / "broken.yaml"
    path.write_text("steps: [3\n")
    return str(path)


CLI_CASES = [
    ("unknown_reader", lambda t: ["ingest", "myspace"], "myspace"),
    ("reader_option_not_key_value", lambda t: ["ingest", "synthetic-multisource", "-o", "n_users"],
     "key=value"),
    ("unknown_reader_option", lambda t: ["ingest", "synthetic-multisource", "-o", "colour=blue"], "colour"),
    ("parquet_reader_without_path", lambda t: ["ingest", "parquet"], "path"),
    ("synthesize_uningested_dataset", lambda t: ["synthesize", "nope", "--root", str(t)], "not ingested"),
    ("synthesize_unknown_setting", lambda t: ["synthesize", "nope", "--root", str(t), "--set", "colour=1"],
     "colour"),
    ("train_profile_not_yaml", lambda t: ["train", "--profile", _broken_profile(t), "--root", str(t)],
     "not valid UTF-8 YAML"),
    ("train_infinite_lr", lambda t: ["train", "--profile", "tiny", "--set", "lr=.inf", "--root", str(t)],
     "finite"),
]  # fmt: skip


@pytest.mark.parametrize(("id", "args", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_user_error_exits_2_with_one_message(id, args, message, tmp_path):
    result = CliRunner().invoke(app, args(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


# -- 5. request records (what `embed-batch` and the scoring server feed the model) -------------------
@pytest.fixture(scope="module")
def served(tiny_root, tiny_model):
    from components.registry.served import ServedEmbedder

    return ServedEmbedder.from_paths(tiny_model, tiny_root / "data" / "tiny" / "schema.yaml",
                                     cache_dir=tiny_root / "cache")  # fmt: skip


def _record(**changes) -> pd.DataFrame:
    record = {"user_id": 1, "clicks": ["Clicked a.", "Clicked b."], "searches": ["Searched c."],
              "age_days": 120.0, "tier": "b", **changes}  # fmt: skip
    return pd.DataFrame([record])


REFUSED_RECORDS = [
    ("source_as_text", _record(clicks="Clicked a."), "must be a list of event texts"),
    ("non_text_event", _record(clicks=["Clicked a.", 7]), "non-text events"),
    ("unknown_task", _record(task="likes_y"), "has no task 'likes_y'"),
    ("task_and_instruction", _record(task="churns", instruction="Will they stay?"), "not both"),
    ("number_as_text", _record(age_days="old"), "must be a finite number"),
    ("infinite_number", _record(age_days=float("inf")), "must be a finite number"),
]


@pytest.mark.parametrize(("id", "records", "message"), REFUSED_RECORDS, ids=[c[0] for c in REFUSED_RECORDS])
def test_malformed_record_is_refused_naming_row_and_column(id, records, message, served):
    from components.registry.records import RecordError

    with pytest.raises(RecordError, match="record 0") as e:
        served.embed_records(records)
    assert message in str(e.value)


def test_nan_number_is_a_missing_value_not_an_error(served):
    nan = served.embed_records(_record(age_days=float("nan")))
    absent = served.embed_records(_record().drop(columns=["age_days"]))
    np.testing.assert_allclose(nan, absent, atol=1e-6)
    assert not np.allclose(nan, served.embed_records(_record()), atol=1e-4)


def test_instruction_of_100k_characters_is_truncated_to_the_token_budget(served):
    """The model keeps an instruction's first `max_instruction_tokens` (128) tokens: a 100,000-character
    instruction embeds like any prefix longer than that budget, quickly, with a unit-norm vector."""
    sentence = "Does this user like x? "
    huge = (sentence * (100_000 // len(sentence) + 1))[:100_000]
    assert len(huge) == 100_000
    budget = served.model.config.max_instruction_tokens
    prefix = sentence * budget  # > budget tokens, far fewer characters
    vectors = served.embed_records(pd.concat([_record(instruction=huge), _record(instruction=prefix),
                                              _record(instruction=sentence)], ignore_index=True))  # fmt: skip
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[2], atol=1e-4)


def test_oversized_event_text_is_truncated_by_the_encoder(served):
    long = served.embed_records(_record(clicks=["Clicked a. " + "x" * 100_000]))
    assert long.shape == (1, served.dim) and np.isfinite(long).all()
