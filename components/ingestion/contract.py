"""The data contract's tables (DESIGN.md section 3) as code.

A dataset is a folder `data/<name>/` holding `schema.yaml` (the card) and four parquet tables:

- `users.parquet`: `user_id`, `split` (`train` or `probe`), one column per tabular feature;
- `events.parquet`: `user_id`, `source`, `ts`, `text`, plus optional structured fields, in canonical
  order (`event_order`: user, time, then the event's own key: source, `item_id` when the table has
  one, text; never the order of the input, so shuffled input cuts the same way);
- `labels.parquet`: `user_id`, `task`, `label` (0/1), computed from data after the user's cut-off;
- `cutoffs.parquet`: `user_id`, `as_of`, `n_profile`: the profile is the user's first `n_profile`
  events in canonical order, all of which happen at or before `as_of`, the first future event's time.
  `n_profile` settles ties when several events share the cut-off second.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from components.ingestion.card import DatasetCard


class Split(StrEnum):
    TRAIN = "train"
    PROBE = "probe"


HOLDOUT_SHARE = 3  # one training user in three


def in_validation_holdout(user_id: int) -> bool:
    """A third of the training users, fixed by id: the validation probe that picks among a run's
    models reads only them, and UserQA's recorded-label family never answers for them, so a
    candidate is never scored on users whose labels it was trained on."""
    return zlib.crc32(str(int(user_id)).encode()) % HOLDOUT_SHARE == 0


def labelled_training_users(tables: ContractTables, holdout: bool | None = None) -> list[int]:
    """Training users with labels (sorted); `holdout=True` only the validation holdout's, `False`
    only the others', None all of them."""
    users = tables.users
    train = set(users.loc[users["split"] == Split.TRAIN.value, "user_id"].astype(int))
    labelled = train & set(tables.labels["user_id"].astype(int))
    return sorted(u for u in labelled if holdout is None or in_validation_holdout(u) == holdout)


class Table(StrEnum):
    USERS = "users"
    EVENTS = "events"
    LABELS = "labels"
    CUTOFFS = "cutoffs"

    @property
    def filename(self) -> str:
        return f"{self.value}.parquet"


CARD_FILENAME = "schema.yaml"
TS_DTYPE = "datetime64[us, UTC]"

# Required columns per table; tabular feature columns of `users` come from the card.
REQUIRED_COLUMNS: dict[Table, tuple[str, ...]] = {
    Table.USERS: ("user_id", "split"),
    Table.EVENTS: ("user_id", "source", "ts", "text"),
    Table.LABELS: ("user_id", "task", "label"),
    Table.CUTOFFS: ("user_id", "as_of", "n_profile"),
}


TIE_BREAK = ("source", "item_id", "text")  # equal timestamps: the event's own key, never input order


def event_order(events: pd.DataFrame) -> list[str]:
    """The columns that sort events into canonical order (the optional `item_id` when present)."""
    return ["user_id", "ts", *(c for c in TIE_BREAK if c in events.columns)]


@dataclass
class ContractTables:
    """The four tables of one dataset, or of one chunk of users of it."""

    users: pd.DataFrame
    events: pd.DataFrame
    labels: pd.DataFrame
    cutoffs: pd.DataFrame

    def __getitem__(self, table: Table) -> pd.DataFrame:
        return getattr(self, table.value)

    def items(self) -> Iterator[tuple[Table, pd.DataFrame]]:
        for t in Table:
            yield t, self[t]


@dataclass
class RawDataset:
    """What a reader returns: the card and the tables, in chunks of whole users.

    A chunk holds complete users: every event, label and cut-off of a user is in the same chunk as
    the user's row (or in an earlier one), so validation can stream with bounded memory.
    """

    card: DatasetCard
    chunks: Iterator[ContractTables]
    n_users_hint: int | None = None
    provenance: dict[str, str] = field(default_factory=dict)


def split_for(user_ids: np.ndarray | pd.Series, card: DatasetCard) -> np.ndarray:
    """The split each user id gets under the card's rule (DESIGN: id % 5 in {0, 1} -> probe)."""
    if card.split is None:
        raise ValueError(f"dataset {card.name!r} has no split rule; its users.parquet carries `split`")
    ids = np.asarray(user_ids, dtype=np.int64)
    probe = np.isin(ids % card.split.modulus, card.split.probe_remainders)
    return np.where(probe, Split.PROBE.value, Split.TRAIN.value)


def profile_mask(events: pd.DataFrame, cutoffs: pd.DataFrame) -> np.ndarray:
    """True for events in their user's profile window: the first `n_profile` events in table order.

    `events` must be in canonical order (as written by ingestion).
    """
    pos = events.groupby("user_id", sort=False).cumcount().to_numpy()
    n_profile = events["user_id"].map(cutoffs.set_index("user_id")["n_profile"]).to_numpy()
    return pos < n_profile


def read_tables(folder: str | Path) -> tuple[DatasetCard, ContractTables]:
    """Read an ingested dataset folder (the output of `ingest`) as the contract's tables."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist; run `instructue ingest` first")
    card = DatasetCard.load(folder / CARD_FILENAME)
    tables = {t.value: pd.read_parquet(folder / t.filename) for t in Table}
    return card, ContractTables(**tables)
