"""The MovieLens-100k reader on the real embedded files, and the official layout from a local folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.ingestion import movielens
from components.ingestion.contract import profile_mask
from components.ingestion.movielens import GENRES, MovieLensError, MovieLensOptions, build_tables, load_raw

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def ml():
    return build_tables(load_raw())


def test_shape_of_the_real_dataset(ml):
    assert len(ml.users) == 943 and ml.users["user_id"].is_unique
    assert len(ml.events) == 100_000
    assert set(ml.labels["task"]) == {
        "gender_female", "age_under_25", "occupation_student",
        "next4_scifi_liked", "future_drama_share_high", "next4_new_release",
    }  # fmt: skip
    assert len(ml.labels) == 6 * 943 and set(ml.labels["label"]) == {0, 1}
    assert ml.events["text"].str.startswith('Rated "').all()
    assert ml.events.iloc[0]["text"].endswith("out of 5 stars.")


def test_demographics_are_labels_never_inputs(ml):
    leaked = {"age", "gender", "occupation", "zip", "zip_code"} & set(ml.users.columns)
    assert not leaked
    assert not {"age", "gender", "occupation"} & set(ml.events.columns)


def test_cutoff_is_80_percent_by_time_then_item(ml):
    n = ml.events.groupby("user_id").size()
    cut = ml.cutoffs.set_index("user_id")
    assert (cut["n_profile"] == np.floor(0.8 * n)).all()
    assert (n - cut["n_profile"] >= 4).all()
    ev = ml.events
    canonical = ev.sort_values(["user_id", "ts", "item_id"], kind="stable")
    assert canonical.index.equals(ev.index)
    prof = profile_mask(ev, ml.cutoffs)
    as_of = ev["user_id"].map(cut["as_of"])
    assert (ev["ts"][prof] <= as_of[prof]).all() and (ev["ts"][~prof] >= as_of[~prof]).all()


def test_tabular_features_come_from_the_profile_window_only(ml):
    ev = ml.events[profile_mask(ml.events, ml.cutoffs)]
    u = ev[ev["user_id"] == 7]
    row = ml.users.set_index("user_id").loc[7]
    assert row["n_ratings"] == len(u)
    assert row["mean_rating"] == pytest.approx(u["rating"].mean())
    assert row["share_5star"] == pytest.approx((u["rating"] == 5).mean())
    assert row["distinct_genres"] == len(set("|".join(u["genres"]).split("|")))
    days = (u["ts"].max() - u["ts"].min()).total_seconds() / 86400
    assert row["days_active"] == pytest.approx(days)


def test_labels_follow_their_definitions(ml):
    ev = ml.events[~profile_mask(ml.events, ml.cutoffs)]
    labels = ml.labels.pivot(index="user_id", columns="task", values="label")
    for uid in (1, 2, 50, 400):
        nxt = ev[ev["user_id"] == uid].head(4)
        scifi = any(
            "Sci-Fi" in g.split("|") and r >= 4 for g, r in zip(nxt["genres"], nxt["rating"], strict=True)
        )
        assert labels.loc[uid, "next4_scifi_liked"] == int(scifi)
        assert labels.loc[uid, "next4_new_release"] == int((nxt["year"].fillna(0) >= 1997).any())
    share = ev.groupby("user_id")["genres"].apply(
        lambda g: g.str.split("|").map(lambda x: "Drama" in x).mean()
    )
    assert (labels["future_drama_share_high"] == (share > share.median()).astype(int)).all()


def test_split_rule_makes_ids_0_and_1_mod_5_probe(ml):
    probe = ml.users["split"] == "probe"
    assert (probe == ml.users["user_id"].mod(5).isin([0, 1])).all()
    assert probe.sum() == 377


def _write_official(raw, folder) -> None:
    """Write the atomic files back in GroupLens' own layout (u.data, u.item, u.user)."""
    raw.ratings.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    rows = []
    for it in raw.items.itertuples():
        title = it.title if pd.isna(it.year) else f"{it.title} ({it.year})"
        date = "" if pd.isna(it.year) else f"01-Jan-{it.year}"
        flags = ["1" if g in it.genres else "0" for g in GENRES]
        rows.append("|".join([str(it.item_id), title, date, "", "http://example.invalid", *flags]))
    (folder / "u.item").write_text("\n".join(rows) + "\n", encoding="latin-1", errors="replace")
    users = raw.users.assign(zip="00000")
    users.to_csv(folder / "u.user", sep="|", header=False, index=False)


def test_official_layout_gives_the_same_tables(ml, tmp_path):
    raw = load_raw()
    raw.items = raw.items[raw.items["title"].map(lambda t: t.isascii())]  # latin-1 round trip
    raw.ratings = raw.ratings[raw.ratings["item_id"].isin(raw.items["item_id"])]
    _write_official(raw, tmp_path)
    official = build_tables(load_raw(tmp_path))
    expected = build_tables(raw)
    for (t, a), (_, b) in zip(official.items(), expected.items(), strict=True):
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=t.value)


def test_missing_recbole_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MovieLensError, match="pip install --no-deps recbole"):
        movielens.read_movielens()


def test_folder_without_either_layout_is_a_clear_error(tmp_path):
    with pytest.raises(MovieLensError, match="neither RecBole atomic files"):
        movielens.read_movielens(MovieLensOptions(path=tmp_path))
