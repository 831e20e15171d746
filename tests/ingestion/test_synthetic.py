"""The `synthetic-multisource` generator: contract shape, determinism, cut-offs, labels and noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from components.ingestion.card import CardError, DatasetCard, load_bundled_card
from components.ingestion.contract import TS_DTYPE, ContractTables, Split, profile_mask, read_tables
from components.ingestion.ingest import ingest
from components.ingestion.readers import read_dataset
from components.ingestion.synthetic import (
    DATASET,
    INTERESTS,
    NOISE,
    TRAITS,
    SyntheticOptions,
    _check_card,
    read_synthetic,
    user_traits,
)

pytestmark = pytest.mark.unit

N = 10_000
# the trait each task's label is built on
TASK_TRAIT = {
    "forest_click": "eco", "game_topup": "gaming", "public_transit": "transit",
    "purchasing_power": "wealth", "food_preference": "dining", "film_preference": "film",
}  # fmt: skip


def concat(chunks: list[ContractTables]) -> ContractTables:
    return ContractTables(
        **{t.value: pd.concat([c[t] for c in chunks], ignore_index=True) for t, _ in chunks[0].items()}
    )


def generate(**options) -> ContractTables:
    """All chunks of one run, concatenated."""
    return concat(list(read_synthetic(SyntheticOptions(**{"n_users": N, **options})).chunks))


@pytest.fixture(scope="module")
def ds() -> ContractTables:
    return generate()


def assert_same(a: ContractTables, b: ContractTables, check_dtype: bool = True) -> None:
    for t, frame in a.items():
        pd.testing.assert_frame_equal(frame, b[t], obj=t.value, check_dtype=check_dtype)


def test_same_options_give_identical_tables(ds):
    assert_same(ds, generate())


def test_another_seed_gives_other_users(ds):
    other = generate(seed=1)
    assert not ds.events["text"].head(1000).equals(other.events["text"].head(1000))
    assert not ds.labels["label"].equals(other.labels["label"])


def test_chunking_gives_every_user_once_and_the_same_rows(ds):
    raw = read_synthetic(SyntheticOptions(n_users=N, chunk_users=3_000))
    chunks = list(raw.chunks)
    assert [len(c.users) for c in chunks] == [3_000, 3_000, 3_000, 1_000]
    for c in chunks:  # a chunk holds whole users: each table names exactly the chunk's users
        ids = set(c.users["user_id"])
        assert set(c.events["user_id"]) == ids == set(c.labels["user_id"]) == set(c.cutoffs["user_id"])
    ids = np.concatenate([c.users["user_id"].to_numpy() for c in chunks])
    np.testing.assert_array_equal(ids, np.arange(1, N + 1))
    assert_same(ds, concat(chunks))


def test_fewer_users_are_a_prefix_of_more(ds):
    small = generate(n_users=2_500)
    assert_same(small, ContractTables(**{t.value: f[f["user_id"] <= 2_500].reset_index(drop=True)
                                         for t, f in ds.items()}))  # fmt: skip


def test_tables_match_the_card(ds):
    card = load_bundled_card(DATASET)
    assert list(ds.users.columns) == ["user_id", "split", *[f.name for f in card.features]]
    assert ds.users["user_id"].dtype == np.int64
    for f in card.features:
        col = ds.users[f.name]
        if f.categories:
            assert pd.api.types.is_string_dtype(col) and set(col) <= set(f.categories), f.name
        else:
            assert col.dtype == np.float64 and col.between(f.min, f.max).all(), f.name
    assert list(ds.events.columns)[:4] == ["user_id", "source", "ts", "text"]
    assert ds.events["user_id"].dtype == np.int64 and str(ds.events["ts"].dtype) == TS_DTYPE
    assert set(ds.events["source"]) == set(card.sequence_sources)
    assert ds.events["text"].str.len().between(1, card.text_max_chars).all()
    assert set(ds.labels["task"]) == set(card.task_names) and ds.labels["label"].dtype == np.int8
    assert str(ds.cutoffs["as_of"].dtype) == TS_DTYPE and ds.cutoffs["n_profile"].dtype == np.int64
    assert ds.events["ts"].min() >= pd.Timestamp(card.earliest_ts, tz="UTC")
    assert ds.events["ts"].max() < pd.Timestamp.now(tz="UTC")


def test_a_card_that_drifts_from_the_generator_is_refused():
    card = load_bundled_card(DATASET).model_dump()
    card["tasks"] = card["tasks"][::-1]
    with pytest.raises(CardError, match="tasks"):
        _check_card(DatasetCard.model_validate(card))


def test_events_read_naturally(ds):
    ev = ds.events
    pay = ev.loc[ev["source"] == "paybill", "text"]
    assert pay.str.fullmatch(r"Paid \d+\.\d\d CNY at .+ \(.+\) via .+").all()
    assert ev.loc[ev["source"] == "search", "text"].str.fullmatch(r"search: '.+'").all()
    assert ev.loc[ev["source"] == "spm", "text"].str.startswith("Browsed home > ").all()
    assert ev.loc[ev["source"] == "mini_program", "text"].str.contains(" mini (?:program|game)").all()
    assert ev["amount"].notna().eq(ev["source"] == "paybill").all() and (ev["amount"].dropna() > 0).all()
    assert set(ev["trait"]) == {*INTERESTS, NOISE}


def test_events_are_in_canonical_order(ds):
    ev = ds.events
    assert ev.sort_values(["user_id", "ts"], kind="stable").index.equals(ev.index)


def test_cutoff_leaves_at_least_four_future_events_and_agrees_with_the_events(ds):
    ev, cut = ds.events, ds.cutoffs.set_index("user_id")
    n = ev.groupby("user_id").size()
    assert (n - cut["n_profile"] >= 4).all() and (cut["n_profile"] >= 4).all()
    prof = profile_mask(ev, ds.cutoffs)
    as_of = ev["user_id"].map(cut["as_of"])
    assert (ev["ts"][prof] <= as_of[prof]).all() and (ev["ts"][~prof] >= as_of[~prof]).all()
    first_future = ev[~prof].groupby("user_id")["ts"].min()
    assert first_future.reindex(cut.index).equals(cut["as_of"])
    assert 25 <= len(ev) / N <= 40  # about 4 sources x 8 events


def test_every_user_has_a_label_for_every_task_with_a_sane_rate(ds):
    card = load_bundled_card(DATASET)
    assert len(ds.labels) == N * len(card.tasks)
    assert not ds.labels.duplicated(["user_id", "task"]).any()
    assert set(ds.labels["label"]) == {0, 1}
    rates = ds.labels.groupby("task")["label"].mean()
    assert rates.between(0.15, 0.5).all(), rates.to_dict()


def test_labels_follow_the_future_window(ds):
    ev = ds.events[~profile_mask(ds.events, ds.cutoffs)]
    lab = ds.labels.pivot(index="user_id", columns="task", values="label")
    games = ev.loc[ev["category"] == "game_topup", "user_id"].unique()
    assert lab["game_topup"].eq(lab.index.isin(games)).all()
    spend = ev.groupby("user_id")["amount"].sum().reindex(lab.index, fill_value=0.0)
    assert lab["purchasing_power"].eq(spend >= 1_000).all()


def test_probe_split_follows_the_rule(ds):
    probe = ds.users["user_id"] % 5 <= 1
    assert ds.users["split"].eq(np.where(probe, Split.PROBE, Split.TRAIN)).all()


@pytest.mark.parametrize("noise", [0.0, 0.3, 0.7])
def test_noise_share_of_events_matches_the_option(noise):
    ev = generate(n_users=3_000, noise=noise).events
    assert (ev["trait"] == NOISE).mean() == pytest.approx(noise, abs=0.01)


def test_more_noise_weakens_the_link_between_traits_and_labels():
    traits = user_traits(SyntheticOptions(n_users=N)).set_index("user_id")
    assert list(traits.columns) == list(TRAITS)

    def corr(noise: float) -> pd.Series:
        lab = generate(noise=noise).labels.pivot(index="user_id", columns="task", values="label")
        return pd.Series({t: np.corrcoef(traits[z], lab[t])[0, 1] for t, z in TASK_TRAIT.items()})

    clean, noisy = corr(0.1), corr(0.8)
    assert (clean > 0.2).all(), clean.to_dict()
    assert (noisy < clean - 0.1).all(), (clean - noisy).to_dict()


def test_tabular_features_carry_the_traits(ds):
    traits = user_traits(SyntheticOptions(n_users=N)).set_index("user_id")
    users = ds.users.set_index("user_id")
    assert np.corrcoef(traits["wealth"], users["balance_level"])[0, 1] > 0.5
    assert np.corrcoef(traits["activity"], users["monthly_active_days"])[0, 1] > 0.5


def test_ingestion_keeps_every_row(tmp_path):
    options = SyntheticOptions(n_users=500, chunk_users=200)
    summary = ingest(read_synthetic(options), tmp_path / "data", tmp_path / "q", progress=False)
    assert summary.rows_quarantined == {"users": 0, "events": 0, "labels": 0, "cutoffs": 0}
    _, published = read_tables(tmp_path / "data" / DATASET)
    # ingestion stores text as pandas' NA-aware `string`; the values must not change
    assert_same(published, concat(list(read_synthetic(options).chunks)), check_dtype=False)


def test_options_are_checked_at_the_edge():
    for bad in ({"noise": 1.0}, {"noise": -0.1}, {"n_users": 0}, {"colour": "red"}, {"start": "2999-01-01"}):
        with pytest.raises(ValidationError):
            SyntheticOptions(**bad)
    raw = read_dataset(DATASET, n_users=10, seed=3)
    assert raw.n_users_hint == 10 and raw.provenance["seed"] == "3"
    assert len(next(raw.chunks).users) == 10
