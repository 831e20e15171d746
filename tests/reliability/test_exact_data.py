"""Ingestion publishes exactly what it was given (issue 27): ids never pass through a float, a cut-off
that would put future data into the profile is quarantined, and equal timestamps are ordered by the
event's own key, so the same data in any order gives byte-identical files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.ingestion import ingest, read_tables
from components.ingestion.contract import Table, split_for
from tests.conftest import EVENTS_PER_USER, as_raw, make_tables

pytestmark = pytest.mark.unit

BIG = 10**18  # far above 2^53: a float64 cannot tell BIG + 1 from BIG


def _with_ids(card, new_ids: np.ndarray):
    tables = make_tables(card)
    old = tables.users["user_id"].to_numpy()
    mapping = dict(zip(old, new_ids, strict=True))
    for _, frame in tables.items():
        frame["user_id"] = frame["user_id"].map(mapping).astype("int64")
    tables.users["split"] = split_for(tables.users["user_id"], card)
    return tables


def _ingest(card, tables, tmp_path, **kw):
    return ingest(as_raw(card, tables), tmp_path / "data", tmp_path / "q", progress=False, **kw)


def test_ids_above_2_to_the_53_are_published_exactly(tiny_card, tmp_path):
    n = len(make_tables(tiny_card).users)
    ids = BIG + np.arange(1, n + 1, dtype=np.int64)
    summary = _ingest(tiny_card, _with_ids(tiny_card, ids), tmp_path)

    assert sum(summary.rows_quarantined.values()) == 0
    _, out = read_tables(tmp_path / "data" / "tiny")
    assert sorted(out.users["user_id"].tolist()) == ids.tolist()
    assert set(out.events["user_id"]) == set(ids.tolist())


def test_ids_as_text_are_read_exactly_and_out_of_range_ids_are_quarantined(tiny_card, tmp_path):
    n = len(make_tables(tiny_card).users)
    ids = BIG + np.arange(1, n + 1, dtype=np.int64)
    tables = _with_ids(tiny_card, ids)
    for _, frame in tables.items():
        frame["user_id"] = frame["user_id"].astype(str).astype(object)
    tables.users.loc[0, "user_id"] = str(2**64)  # no int64 holds it
    tables.users.loc[1, "user_id"] = float(ids[1])  # a float already rounded by whoever wrote it

    summary = _ingest(tiny_card, tables, tmp_path, max_bad_share=1.0)

    assert summary.rows_quarantined["users"] == 2
    reasons = pq.read_table(f"{summary.quarantine}/users.parquet").column("reason").to_pylist()
    assert any("outside the 64-bit integer range" in r for r in reasons), reasons
    assert any("beyond 2^53" in r for r in reasons), reasons
    _, out = read_tables(tmp_path / "data" / "tiny")
    assert sorted(out.users["user_id"].tolist()) == ids[2:].tolist()


@pytest.mark.parametrize(
    "id, breaks, reason",
    [
        ("as_of_before_the_profile", lambda c: c.__setitem__("as_of", c["as_of"] - pd.Timedelta(days=30)),
         "future data in the profile"),
        ("n_profile_above_the_event_count", lambda c: c.__setitem__("n_profile", EVENTS_PER_USER + 3),
         "n_profile exceeds"),
        ("as_of_after_a_future_event", lambda c: c.__setitem__("as_of", c["as_of"] + pd.Timedelta(hours=1)),
         "dated before the cut-off"),
    ],
)  # fmt: skip
def test_a_cutoff_inconsistent_with_the_events_quarantines_its_user(id, breaks, reason, tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    bad_user = int(tables.cutoffs.loc[2, "user_id"])
    row = tables.cutoffs.loc[[2]].copy()
    breaks(row)
    tables.cutoffs.loc[[2]] = row

    summary = _ingest(tiny_card, tables, tmp_path, max_bad_share=1.0)

    assert summary.rows_quarantined["users"] == 1
    reasons = pq.read_table(f"{summary.quarantine}/users.parquet").column("reason").to_pylist()
    assert any(reason in r for r in reasons), reasons
    _, out = read_tables(tmp_path / "data" / "tiny")
    assert bad_user not in set(out.users["user_id"]) | set(out.events["user_id"])
    # nothing published is after its user's cut-off in the profile
    cut = out.cutoffs.set_index("user_id")
    pos = out.events.groupby("user_id").cumcount()
    profile = out.events[pos.to_numpy() < out.events["user_id"].map(cut["n_profile"]).to_numpy()]
    assert (profile["ts"] <= profile["user_id"].map(cut["as_of"])).all()


def test_shuffled_input_with_equal_timestamps_gives_byte_identical_files(tiny_card, tmp_path):
    tables = make_tables(tiny_card)
    ev = tables.events
    ev["ts"] = ev.groupby("user_id")["ts"].transform("min")  # every event of a user in the same second
    tables.cutoffs["as_of"] = tables.cutoffs["user_id"].map(ev.groupby("user_id")["ts"].min())
    shuffled = make_tables(tiny_card)
    shuffled.events = ev.sample(frac=1.0, random_state=3).reset_index(drop=True)
    shuffled.cutoffs = tables.cutoffs.copy()

    _ingest(tiny_card, tables, tmp_path / "a")
    _ingest(tiny_card, shuffled, tmp_path / "b")

    for t in Table:
        a = (tmp_path / "a" / "data" / "tiny" / t.filename).read_bytes()
        b = (tmp_path / "b" / "data" / "tiny" / t.filename).read_bytes()
        assert a == b, t


def test_a_task_without_labels_leaves_a_valid_json_manifest(tiny_card, tmp_path):
    import json

    tables = make_tables(tiny_card)
    tables.labels = tables.labels[tables.labels["task"] != "churns"]
    _ingest(tiny_card, tables, tmp_path)

    text = (tmp_path / "data" / "tiny" / "manifest.json").read_text()
    manifest = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in manifest.json"))
    assert manifest["positive_rate"]["churns"] == {"all": None, "probe": None, "train": None}


def test_a_link_to_a_file_outside_the_dataset_folder_is_refused(tiny_card, tmp_path):
    import yaml

    from components.ingestion import ContractError
    from components.ingestion.parquet_folder import ParquetOptions, read_parquet_folder

    folder, elsewhere = tmp_path / "mine", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "schema.yaml").write_text(yaml.safe_dump(tiny_card.model_dump(mode="json")))
    for t, frame in make_tables(tiny_card).items():
        target = elsewhere if t is Table.EVENTS else folder
        frame.to_parquet(target / t.filename)
    (folder / Table.EVENTS.filename).symlink_to(elsewhere / Table.EVENTS.filename)

    with pytest.raises(ContractError, match="outside the dataset folder"):
        read_parquet_folder(ParquetOptions(path=folder))
