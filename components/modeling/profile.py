"""A user's model input drawn from the contract's tables: profile-window events per source.

Only events of the profile window (the first `n_profile` of each user, see `contract.py`) ever reach
the model; future events feed labels and forward-looking answers, never inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from components.ingestion import ContractTables, DatasetCard, SourceKind, profile_mask


@dataclass(frozen=True)
class UserProfile:
    user_id: int
    events: dict[str, list[str]]  # sequence source -> event texts, oldest first, most recent kept


def source_caps(card: DatasetCard, max_events: int | None) -> dict[str, int]:
    """Events kept per sequence source: the config's cap if given, else the card's."""
    return {
        s.name: (max_events if max_events is not None else s.max_events)
        for s in card.sources
        if s.kind is SourceKind.SEQUENCE
    }


def build_profiles(
    card: DatasetCard, tables: ContractTables, user_ids: list[int], max_events: int | None = None
) -> list[UserProfile]:
    """Profiles of `user_ids`, in that order; a user with no events in a source gets an empty list."""
    caps = source_caps(card, max_events)
    wanted = pd.Index(user_ids)
    ev = tables.events[tables.events["user_id"].isin(wanted)]
    cut = tables.cutoffs[tables.cutoffs["user_id"].isin(wanted)]
    ev = ev[profile_mask(ev, cut)]
    ev = ev[ev["source"].isin(list(caps))]
    # most recent `cap` events per (user, source), kept in chronological order
    keep = ev.groupby(["user_id", "source"], sort=False).cumcount(ascending=False) < ev["source"].map(caps)
    ev = ev[keep.to_numpy()]
    texts = ev.groupby(["user_id", "source"], sort=False)["text"].agg(list).to_dict()
    return [UserProfile(int(u), {s: texts.get((u, s), []) for s in caps}) for u in user_ids]
