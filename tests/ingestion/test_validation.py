"""The bad-input corpus: each kind of defect gets a clear reason, only defective rows are quarantined,
and every valid row is kept (counts asserted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.ingestion import ContractError, TooManyBadRows, ingest, read_tables
from components.ingestion.card import CardError, DatasetCard
from components.ingestion.contract import Table
from components.ingestion.parquet_folder import ParquetOptions, read_parquet_folder
from tests.conftest import CASCADE, EVENTS_PER_USER, TINY_CARD, as_raw, cell, make_tables

pytestmark = pytest.mark.unit


def _drop(table: str, row: int):
    def mutate(t):
        setattr(t, table, getattr(t, table).drop(index=row).reset_index(drop=True))

    return mutate


@dataclass
class Case:
    id: str
    mutate: Callable
    bad: dict[str, int]  # quarantined rows per table
    reason: str  # substring of the reason on the defective row
    table: str  # table whose row carries `reason`


FUTURE = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)
CASES = [
    Case("null_user_id", cell("users", 2, "user_id", None, True), CASCADE, "user_id is missing", "users"),
    Case("duplicate_user_id", cell("users", 3, "user_id", 2),
         {"users": 2, "events": 12, "labels": 4, "cutoffs": 2}, "appears more than once", "users"),
    Case("non_integer_user_id", cell("users", 2, "user_id", "u3", True), CASCADE, "not an integer", "users"),
    Case("unparseable_ts", cell("events", 4, "ts", "not a date", True), {"events": 1}, "parseable", "events"),
    Case("future_ts", cell("events", 4, "ts", FUTURE), {"events": 1}, "in the future", "events"),
    Case("too_old_ts", cell("events", 4, "ts", pd.Timestamp("1999-01-01", tz="UTC")), {"events": 1},
         "too old", "events"),
    Case("unknown_source", cell("events", 4, "source", "tiktok"), {"events": 1}, "not a sequence source",
         "events"),
    Case("tabular_as_event_source", cell("events", 4, "source", "tabular"), {"events": 1},
         "not a sequence source", "events"),
    Case("empty_text", cell("events", 4, "text", ""), {"events": 1}, "text is empty", "events"),
    Case("oversized_text", cell("events", 4, "text", "x" * 201), {"events": 1}, "longer than 200", "events"),
    Case("missing_text", cell("events", 4, "text", None), {"events": 1}, "text is missing", "events"),
    Case("non_utf8_text", cell("events", 4, "text", b"\xff\xfe bad", True), {"events": 1}, "UTF-8", "events"),
    Case("wrong_tabular_type", cell("users", 2, "age_days", "abc", True), CASCADE, "not a number", "users"),
    Case("infinite_number", cell("users", 2, "age_days", np.inf), CASCADE, "infinite", "users"),
    Case("nan_number", cell("users", 2, "age_days", np.nan), CASCADE, "age_days is missing", "users"),
    Case("out_of_range_number", cell("users", 2, "age_days", -5.0), CASCADE, "outside its range", "users"),
    Case("unknown_category", cell("users", 2, "tier", "z"), CASCADE, "not one of its categories", "users"),
    Case("unknown_split", cell("users", 2, "split", "test"), CASCADE, "split must be one of", "users"),
    Case("probe_user_in_train_split", cell("users", 4, "split", "train"), CASCADE, "probe user", "users"),
    Case("label_not_binary", cell("labels", 3, "label", 2), {"labels": 1}, "label must be 0 or 1", "labels"),
    Case("label_not_number", cell("labels", 3, "label", "yes", True), {"labels": 1}, "not a number",
         "labels"),
    Case("unknown_task", cell("labels", 3, "task", "nope"), {"labels": 1}, "not a task of the card",
         "labels"),
    Case("duplicate_label", cell("labels", 1, "task", "likes_x"), {"labels": 2}, "more than one label",
         "labels"),
    Case("orphan_event", cell("events", 4, "user_id", 999), {"events": 1}, "not in users", "events"),
    Case("orphan_label", cell("labels", 3, "user_id", 999), {"labels": 1}, "not in users", "labels"),
    Case("user_without_cutoff", _drop("cutoffs", 6),
         {"users": 1, "events": EVENTS_PER_USER, "labels": 2}, "no valid cut-off", "users"),
    Case("bad_cutoff_time", cell("cutoffs", 6, "as_of", "yesterday-ish", True), CASCADE, "as_of", "cutoffs"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_defect_is_quarantined_with_reason_and_valid_rows_are_kept(case, tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    case.mutate(tables)
    rows_in = {t.value: len(f) for t, f in tables.items()}

    summary = ingest(as_raw(tiny_card, tables), tmp_path / "data", tmp_path / "q", max_bad_share=1.0)

    expected_bad = {t.value: case.bad.get(t.value, 0) for t in Table}
    assert summary.rows_quarantined == expected_bad
    assert summary.rows_kept == {t: rows_in[t] - expected_bad[t] for t in rows_in}
    _, published = read_tables(tmp_path / "data" / "tiny")
    assert {t.value: len(f) for t, f in published.items()} == summary.rows_kept

    quarantined = pq.read_table(f"{summary.quarantine}/{case.table}.parquet").to_pandas()
    assert quarantined["reason"].str.contains(case.reason, regex=False).any(), quarantined["reason"].tolist()
    for table, n in expected_bad.items():
        if n:
            q = pq.read_table(f"{summary.quarantine}/{table}.parquet").to_pandas()
            assert len(q) == n and q["reason"].str.len().gt(0).all()


def test_all_defects_together_lose_no_valid_row(tiny_card, tmp_path):
    """Several defects in one larger dataset: each hits its own user, so the counts add up."""
    tables = make_tables(tiny_card, n_users=200)
    n = {t.value: len(f) for t, f in tables.items()}
    cell("users", 2, "age_days", "abc", True)(tables)  # user 3: cascade
    cell("users", 4, "split", "train")(tables)  # user 5 is a probe user: cascade
    cell("events", 100, "source", "tiktok")(tables)
    cell("events", 101, "text", "")(tables)
    cell("events", 102, "user_id", 9999)(tables)
    cell("labels", 50, "label", 7)(tables)
    summary = ingest(as_raw(tiny_card, tables), tmp_path / "data", tmp_path / "q", max_bad_share=1.0)
    bad = {"users": 2, "events": 2 * EVENTS_PER_USER + 3, "labels": 2 * 2 + 1, "cutoffs": 2}
    assert summary.rows_quarantined == bad
    assert summary.rows_kept == {t: n[t] - bad[t] for t in n}


def test_clean_dataset_publishes_everything_and_no_quarantine(tiny_card, tmp_path):
    summary = ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q")
    assert summary.quarantine is None and not (tmp_path / "q").exists()
    assert summary.users_per_split == {"train": 12, "probe": 8}
    assert set(summary.positive_rate) == {"likes_x", "churns"}
    folder = tmp_path / "data" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["schema.yaml", "manifest.json"] + [t.filename for t in Table]
    )
    assert DatasetCard.load(folder / "schema.yaml") == tiny_card
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no temp left


def test_chunks_are_validated_across_each_other(tiny_card, tmp_path):
    """A user id repeated in a later chunk is a duplicate too; valid chunks are concatenated."""
    a, b = make_tables(tiny_card, n_users=10), make_tables(tiny_card, n_users=10)
    for frame in b.users, b.events, b.labels, b.cutoffs:
        frame["user_id"] += 10
    b.users.loc[0, "user_id"] = 3  # user 11's row claims id 3, already seen in chunk a
    b.users["split"] = np.where(b.users["user_id"] % 5 <= 1, "probe", "train")
    summary = ingest(as_raw(tiny_card, a, b), tmp_path / "data", tmp_path / "q", max_bad_share=1.0)
    assert summary.rows_quarantined["users"] == 1
    assert "unique_across_chunks" in " ".join(summary.reasons)
    assert summary.rows_kept["users"] == 19
    _, out = read_tables(tmp_path / "data" / "tiny")
    assert sorted(out.users["user_id"]) == [i for i in range(1, 21) if i != 11]


# -- table-level defects: one clear message, nothing published ---------------------------------
def test_missing_column_names_table_and_column(tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    tables.events = tables.events.drop(columns=["text"])
    tables.users = tables.users.drop(columns=["tier"])
    with pytest.raises(ContractError) as e:
        ingest(as_raw(tiny_card, tables), tmp_path / "data", tmp_path / "q")
    assert "events.parquet lacks column(s) ['text']" in str(e.value)
    assert "users.parquet lacks column(s) ['tier']" in str(e.value)
    assert not (tmp_path / "data" / "tiny").exists()


def _write_folder(folder, card: DatasetCard, tables) -> None:
    folder.mkdir(parents=True)
    (folder / "schema.yaml").write_text(card.to_yaml())
    for t, f in tables.items():
        f.to_parquet(folder / t.filename)


def test_truncated_parquet_file_is_a_clear_error(tiny_card, tmp_path):
    folder = tmp_path / "mine"
    _write_folder(folder, tiny_card, make_tables(tiny_card))
    data = (folder / "events.parquet").read_bytes()
    (folder / "events.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ContractError, match="events.parquet is not a readable parquet file"):
        read_parquet_folder(ParquetOptions(path=folder))


def test_missing_table_file_is_a_clear_error(tiny_card, tmp_path):
    folder = tmp_path / "mine"
    _write_folder(folder, tiny_card, make_tables(tiny_card))
    (folder / "labels.parquet").unlink()
    with pytest.raises(ContractError, match="labels.parquet is missing"):
        read_parquet_folder(ParquetOptions(path=folder))


def test_parquet_folder_with_text_typed_numbers_quarantines_only_bad_cells(tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    tables.users["age_days"] = tables.users["age_days"].map(lambda x: f"{x:.3f}").astype(object)
    tables.users.loc[2, "age_days"] = "abc"
    folder = tmp_path / "mine"
    _write_folder(folder, tiny_card, tables)
    summary = ingest(read_parquet_folder(ParquetOptions(path=folder)), tmp_path / "data", tmp_path / "q",
                     max_bad_share=1.0)  # fmt: skip
    assert summary.rows_quarantined == CASCADE
    _, out = read_tables(tmp_path / "data" / "tiny")
    assert out.users["age_days"].dtype == np.float64


def test_empty_dataset_is_rejected(tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    for t, f in tables.items():
        setattr(tables, t.value, f.iloc[:0])
    with pytest.raises(ContractError, match="no users at all"):
        ingest(as_raw(tiny_card, tables), tmp_path / "data", tmp_path / "q")
    assert not (tmp_path / "data" / "tiny").exists()


def test_card_source_without_events_is_rejected(tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    tables.events = tables.events[tables.events["source"] != "searches"]
    tables.cutoffs["n_profile"] = 2  # the clicks left before as_of: a cut-off consistent with the events
    with pytest.raises(ContractError, match=r"declares source\(s\) \['searches'\] but no valid event"):
        ingest(as_raw(tiny_card, tables), tmp_path / "data", tmp_path / "q")


def test_too_many_bad_rows_stops_names_worst_check_and_keeps_previous_version(tiny_card, tmp_path):
    ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q")
    before = (tmp_path / "data" / "tiny" / "events.parquet").read_bytes()
    tables = make_tables(tiny_card)
    tables.events.loc[:30, "source"] = "tiktok"
    with pytest.raises(TooManyBadRows) as e:
        ingest(as_raw(tiny_card, tables), tmp_path / "data", tmp_path / "q", max_bad_share=0.05)
    assert "expect_column_values_to_be_in_set(source)" in str(e.value)
    assert "nothing was published" in str(e.value)
    assert (tmp_path / "data" / "tiny" / "events.parquet").read_bytes() == before
    runs = list((tmp_path / "q" / "tiny").iterdir())
    assert len(runs) == 1 and (runs[0] / "events.parquet").exists() and (runs[0] / "summary.json").exists()


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"sources": []}, "at least one source of kind 'sequence'"),
        ({"colour": "blue"}, "colour"),
        ({"features": [{"name": "x", "type": "numeric", "min": 5, "max": 1}]}, "min 5.0 > max 1.0"),
        ({"tasks": [{"name": "Bad Name", "description": "d", "instruction": "i"}]}, "lower_snake_case"),
    ],
)
def test_invalid_card_is_a_clear_error(tmp_path, patch, message):
    import yaml

    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump({**TINY_CARD, **patch}))
    with pytest.raises(CardError, match="invalid") as e:
        DatasetCard.load(path)
    assert message in str(e.value)


def test_unreadable_card_is_a_clear_error(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_bytes(b"name: [unclosed")
    with pytest.raises(CardError, match="not valid YAML"):
        DatasetCard.load(path)
    with pytest.raises(CardError, match="does not exist"):
        DatasetCard.load(tmp_path / "nope.yaml")


def test_reingesting_unchanged_data_keeps_derived_files_changed_data_drops_them(tiny_card, tmp_path):
    ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q")
    derived = tmp_path / "data" / "tiny" / "userqa.parquet"
    derived.write_bytes(b"derived")
    ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q")
    assert derived.read_bytes() == b"derived"
    ingest(as_raw(tiny_card, make_tables(tiny_card, seed=1)), tmp_path / "data", tmp_path / "q")
    assert not derived.exists()
