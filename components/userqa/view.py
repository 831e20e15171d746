"""A dataset's events seen the way fact extraction needs them, whatever the reader.

Every event gets `terms` (what it is about: MovieLens genres, synthetic categories), an optional
`score` (a rating) and `amount` (money spent) and `year` (release year). The lexicon names things in
answers ("genres" and "films" for MovieLens, "categories" and "services" elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.ingestion import ContractTables, Split, profile_mask


@dataclass(frozen=True)
class Lexicon:
    item: str = "item"
    items: str = "items"
    term: str = "category"
    terms: str = "categories"
    event: str = "event"
    events: str = "events"


MOVIES = Lexicon("film", "films", "genre", "genres", "rating", "ratings")
SERVICES = Lexicon("service", "services", "category", "categories", "activity", "activities")


@dataclass
class EventView:
    """Profile and future events of the training users only, with normalised columns."""

    profile: pd.DataFrame  # user_id, ts, source, terms (tuple[str]), score, amount, year
    future: pd.DataFrame
    vocabulary: frozenset[str]
    lexicon: Lexicon
    sources: list[str]
    has_score: bool
    has_amount: bool
    has_year: bool

    @property
    def popular_terms(self) -> list[str]:
        """The ten most frequent terms in the training users' profiles (for "avoided" facts)."""
        if "_popular" not in self.__dict__:
            terms = self.profile["terms"].explode().dropna()
            self.__dict__["_popular"] = list(terms.value_counts().head(10).index)
        return self.__dict__["_popular"]

    def window(self, user: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One user's profile and future events (grouped once, not a scan of all events per user)."""
        if "_by_user" not in self.__dict__:
            self.__dict__["_by_user"] = (
                dict(tuple(self.profile.groupby("user_id", sort=False))),
                dict(tuple(self.future.groupby("user_id", sort=False))),
            )
        profile, future = self.__dict__["_by_user"]
        empty = self.profile.iloc[:0]
        return profile.get(user, empty), future.get(user, empty)

    @property
    def user_ids(self) -> list[int]:
        return sorted(set(self.profile["user_id"]) | set(self.future["user_id"]))


def _terms(events: pd.DataFrame) -> tuple[pd.Series, Lexicon]:
    if "genres" in events:
        return events["genres"].fillna("").map(lambda g: tuple(t for t in g.split("|") if t)), MOVIES
    if "category" in events:
        return events["category"].fillna("").map(lambda c: (c.replace("_", " "),) if c else ()), SERVICES
    return pd.Series([()] * len(events), index=events.index), Lexicon()


def train_view(tables: ContractTables, sources: list[str]) -> EventView:
    """Events of `train` users, split into their profile and future windows.

    Reads only the users' split, the events and the cut-offs: never labels, never tabular
    attributes, never a probe user's rows.
    """
    train = set(tables.users.loc[tables.users["split"] == Split.TRAIN.value, "user_id"].astype(int))
    ev = tables.events[tables.events["user_id"].isin(train)]
    cut = tables.cutoffs[tables.cutoffs["user_id"].isin(train)]
    in_profile = profile_mask(ev, cut)
    terms, lexicon = _terms(ev)
    frame = pd.DataFrame(
        {
            "user_id": ev["user_id"].astype(int).to_numpy(),
            "ts": ev["ts"].to_numpy(),
            "source": ev["source"].astype(str).to_numpy(),
            "terms": terms.to_numpy(),
            "score": pd.to_numeric(ev["rating"], errors="coerce").to_numpy() if "rating" in ev else np.nan,
            "amount": pd.to_numeric(ev["amount"], errors="coerce").to_numpy() if "amount" in ev else np.nan,
            "year": pd.to_numeric(ev["year"], errors="coerce").to_numpy(dtype=float)
            if "year" in ev
            else np.nan,
        }
    )
    vocabulary = frozenset(t for ts in terms for t in ts)
    return EventView(
        profile=frame[in_profile].reset_index(drop=True),
        future=frame[~in_profile].reset_index(drop=True),
        vocabulary=vocabulary,
        lexicon=lexicon,
        sources=sources,
        has_score="rating" in ev,
        has_amount="amount" in ev,
        has_year="year" in ev,
    )
