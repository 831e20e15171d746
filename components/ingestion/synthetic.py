"""Reader `synthetic-multisource`: a seeded generator with the shape of InstructUE's Alipay data.

Every user has nine latent traits, correlated standard normals: seven interests (eco, gaming, transit,
dining, film, travel, shopping), spending power (`wealth`) and `activity`. Four sequence sources
(PayBill, Mini Program, SPM page paths, search queries) render events in natural language from small
vocabularies. With probability `noise` an event is drawn from a trait-free background (the same kinds
of events at fixed population rates, wealth ignored; `trait == "noise"`); otherwise its topic follows
the user's interest mixture (softmax of the interests), its price tier follows `wealth` and PayBill
amounts scale with it. The `trait` column names the interest that produced an event: the ground truth
for instruction-guided denoising. `user_traits(options)` returns the latent traits themselves.

Time: each user has a nominal cut-off c; profile events fall in the 150 days before c, future events
(at least four) in the 30 days from c, and `as_of` is the first future event's time. The six labels
(every user, every task of the card) are read off the future window, e.g. `game_topup` = a game
top-up event among the future events. Future events are noisy too, so a higher `noise` weakens the
link between traits and labels. Tabular features are noisy functions of the traits.

Determinism: users are generated in blocks of `BLOCK_USERS` ids, block b from the random streams
seeded by (seed, b, stream). A user's rows depend on `seed`, `noise`, `events_per_source` and `start`
only, never on `n_users` or `chunk_users`; the draws do not depend on `noise` either, so the same seed
at two noise levels gives the same users with a nested set of noise events.

    python -c "from components.ingestion.synthetic import *; \\
               print(next(read_synthetic(SyntheticOptions(n_users=100)).chunks).events.head())"
    python benchmarks/synthetic_scale.py --n-users 1000000     # generate and write at scale
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.ingestion.card import CardError, DatasetCard, load_bundled_card
from components.ingestion.contract import TS_DTYPE, ContractTables, RawDataset, split_for
from components.ingestion.synthetic_vocab import (
    CHANNELS,
    CITIES,
    MERCHANTS,
    MINI_PROGRAMS,
    SEARCHES,
    SPM_PATHS,
)

DATASET = "synthetic-multisource"
BLOCK_USERS = 10_000
DAY = 86_400
PROFILE_DAYS, FUTURE_DAYS, CUTOFF_SPREAD_DAYS = 150, 30, 30
MIN_PROFILE, MIN_FUTURE, FUTURE_SHARE = 4, 4, 0.2

SOURCES = ("paybill", "mini_program", "spm", "search")
INTERESTS = ("eco", "gaming", "transit", "dining", "film", "travel", "shopping")
TRAITS = (*INTERESTS, "wealth", "activity")
TOPICS = (*INTERESTS, "daily")  # daily chores only ever come from the background
FEATURES = ("account_age_days", "n_devices", "city_tier", "balance_level", "monthly_active_days", "age_band")
NOISE = "noise"
_W, _ACT = TRAITS.index("wealth"), TRAITS.index("activity")

# Trait correlations (others 0): spending power goes with dining out, travel and shopping.
_CORR = {
    ("dining", "wealth"): 0.4, ("travel", "wealth"): 0.4, ("shopping", "wealth"): 0.3,
    ("eco", "transit"): 0.3, ("gaming", "film"): 0.25, ("gaming", "activity"): 0.2, ("dining", "travel"): 0.2,
}  # fmt: skip
# Interest mixture: softmax(SHARPNESS * z + bias); a bias tunes how common a topic is overall.
SHARPNESS = 1.2
_BIAS = np.array([0.0, -0.2, 0.1, 0.2, -0.1, -0.3, 0.2])
# The background: topic shares and high-end share of trait-free events.
_BACKGROUND = np.array([0.09, 0.08, 0.10, 0.11, 0.08, 0.07, 0.12, 0.35])
_BG_HIGH = 0.3
SPEND_THRESHOLD = 1_000.0  # CNY of PayBill spend in the future window for `purchasing_power`

# Labels: task -> categories of which one future event makes the label 1.
TASK_CATEGORIES = {
    "forest_click": ("ant_forest",),
    "game_topup": ("game_topup",),
    "public_transit": ("metro", "bus"),
    "food_preference": ("dining_high_end",),
    "film_preference": ("cinema_ticket",),
}
TASKS = ("forest_click", "game_topup", "public_transit", "purchasing_power", "food_preference",
         "film_preference")  # fmt: skip

_NO_SLOT, _AMOUNT, _CITY, _CITY_LC, _INT = range(5)


class _Items:
    """All event kinds as flat arrays, sorted by (source, topic, high) so each group is a slice."""

    def __init__(self):
        rows = []  # source, topic, high, category, pre, slot, lo, hi, post, price
        for topic, high, cat, merchant, desc, price in MERCHANTS:
            for ch in CHANNELS:
                post = f" CNY at {merchant} ({desc}) via {ch}"
                rows.append((0, topic, high, cat, "Paid ", _AMOUNT, 0, 0, post, price))
        for s, phrases, before, after in ((1, MINI_PROGRAMS, "", ""), (2, SPM_PATHS, "Browsed ", ""),
                                          (3, SEARCHES, "search: '", "'")):  # fmt: skip
            for topic, high, cat, phrase in phrases:
                pre, slot, lo, hi, post = phrase, _NO_SLOT, 0, 0, ""
                if m := re.search(r"\{(city|n:(\d+)-(\d+))\}", phrase):
                    pre, post = phrase[: m.start()], phrase[m.end() :]
                    if m.group(1) == "city":
                        slot = _CITY_LC if s == 3 else _CITY
                    else:
                        slot, lo, hi = _INT, int(m.group(2)), int(m.group(3))
                rows.append((s, topic, high, cat, before + pre, slot, lo, hi, post + after, 0.0))
        rows.sort(key=lambda r: (r[0], TOPICS.index(r[1]), r[2]))
        cols = list(zip(*rows, strict=True))
        self.topic = np.array([TOPICS.index(t) for t in cols[1]])
        self.categories = sorted(set(cols[3]))
        self.category = np.array([self.categories.index(c) for c in cols[3]])
        self.pre, self.post = pa.array(cols[4]), pa.array(cols[8])
        self.slot = np.array(cols[5], dtype=np.int8)
        self.lo, self.span = np.array(cols[6]), np.array(cols[7]) - np.array(cols[6]) + 1
        self.price = np.array(cols[9], dtype=np.float64)
        # group (source, topic, high) -> [start, start + length); a topic without items of the asked
        # tier falls back to all of its items.
        key = (np.array(cols[0]) * len(TOPICS) + self.topic) * 2 + np.array(cols[2])
        n_groups = len(SOURCES) * len(TOPICS) * 2
        self.start = np.searchsorted(key, np.arange(n_groups)).astype(np.int64)
        self.length = np.searchsorted(key, np.arange(n_groups), side="right") - self.start
        for g in np.flatnonzero(self.length == 0):
            both = slice(g - g % 2, g - g % 2 + 2)
            self.start[g], self.length[g] = self.start[both].min(), self.length[both].sum()
        if (self.length == 0).any():
            raise AssertionError("every source needs at least one phrase per topic")
        # item x task (those defined by categories): does one such future event make the label 1?
        codes = [[self.categories.index(c) for c in cats] for cats in TASK_CATEGORIES.values()]
        self.target = np.stack([np.isin(self.category, c) for c in codes], axis=1)


_ITEMS = _Items()


class SyntheticOptions(BaseModel):
    """Options of the `synthetic-multisource` reader.

    `noise`: the share of events drawn from the trait-free background. `events_per_source`: mean
    events per user and source (all sources together: 4x this, 20% of it after the cut-off).
    `start`: the earliest possible event date; the last one is at most 210 days later.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_users: int = Field(default=10_000, ge=1)
    seed: int = Field(default=0, ge=0)
    noise: float = Field(default=0.3, ge=0.0, lt=1.0)
    chunk_users: int = Field(default=50_000, ge=1)
    events_per_source: float = Field(default=8.0, ge=2.0, le=256.0)
    start: date = date(2024, 1, 1)

    @model_validator(mode="after")
    def _in_the_past(self) -> SyntheticOptions:
        last = self.start + timedelta(days=PROFILE_DAYS + CUTOFF_SPREAD_DAYS + FUTURE_DAYS)
        if last >= date.today():
            raise ValueError(f"start {self.start} puts events up to {last}, in the future; choose a start "
                             f"at least {(last - self.start).days} days before today")  # fmt: skip
        return self


@dataclass
class _Draws:
    """One block (or a slice of blocks) of users as plain arrays; texts are rendered later."""

    user_id: np.ndarray  # per user
    n_events: np.ndarray
    n_profile: np.ndarray
    as_of: np.ndarray  # seconds since the epoch
    features: np.ndarray  # users x features, categorical ones as category codes
    labels: np.ndarray  # users x tasks, int8
    ev_user: np.ndarray  # per event
    ts: np.ndarray  # seconds since the epoch
    source: np.ndarray
    item: np.ndarray
    trait: np.ndarray  # index into INTERESTS, len(INTERESTS) for noise
    amount: np.ndarray  # NaN for events that are not payments
    slot_int: np.ndarray
    city: np.ndarray

    _PER_USER = 6  # the first six fields are per user

    def users(self, lo: int, hi: int) -> _Draws:
        off = np.concatenate([[0], np.cumsum(self.n_events)])
        e0, e1 = off[lo], off[hi]
        vals = [getattr(self, f.name) for f in fields(self)]
        per_user, per_event = vals[: self._PER_USER], vals[self._PER_USER :]
        return _Draws(*[v[lo:hi] for v in per_user], *[v[e0:e1] for v in per_event])

    @staticmethod
    def concat(parts: list[_Draws]) -> _Draws:
        if len(parts) == 1:
            return parts[0]
        return _Draws(*[np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Draws)])


def _rng(seed: int, block: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, block, stream])


def _traits(seed: int, block: int) -> np.ndarray:
    """Latent traits of one block's users: correlated standard normals, users x TRAITS."""
    corr = np.eye(len(TRAITS))
    for (a, b), r in _CORR.items():
        corr[TRAITS.index(a), TRAITS.index(b)] = corr[TRAITS.index(b), TRAITS.index(a)] = r
    return _rng(seed, block, 0).standard_normal((BLOCK_USERS, len(TRAITS))) @ np.linalg.cholesky(corr).T


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _features(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tabular features in card order: noisy functions of the traits."""
    t = {name: z[:, i] for i, name in enumerate(TRAITS)}
    e = rng.standard_normal((len(z), 5))
    age_days = np.clip(np.round(np.exp(6.6 + 0.35 * t["wealth"] + 0.6 * e[:, 0])), 30, 5_000)
    devices = np.clip(1 + rng.poisson(np.exp(-0.4 + 0.5 * t["gaming"] + 0.2 * t["activity"])), 1, 6)
    # city tier codes index ["tier1", "tier2", "tier3", "tier4"]: metro riders and the rich live in big cities
    tier = 3 - np.digitize(0.8 * t["transit"] + 0.5 * t["wealth"] + e[:, 1], [-0.9, 0.2, 1.1])
    balance = np.clip(np.round(5 + 2.0 * t["wealth"] + 1.2 * e[:, 2]), 0, 10)
    active = np.clip(np.round(16 + 6 * t["activity"] + 3 * e[:, 3]), 1, 30)
    # age band codes index ["18-24", "25-34", "35-44", "45-54", "55+"]: gamers skew young
    age = np.digitize(-0.8 * t["gaming"] + 0.3 * t["wealth"] + e[:, 4], [-1.3, -0.1, 0.8, 1.6])
    return np.stack([age_days, devices, tier, balance, active, age], axis=1).astype(np.float64)


def _block(options: SyntheticOptions, block: int) -> _Draws:
    """Users block * BLOCK_USERS + 1 ... (block + 1) * BLOCK_USERS, all of them."""
    n = BLOCK_USERS
    z = _traits(options.seed, block)
    features = _features(z, _rng(options.seed, block, 2))
    rng = _rng(options.seed, block, 1)
    user_id = np.arange(block * n + 1, (block + 1) * n + 1, dtype=np.int64)

    # counts: activity scales both windows; the future window keeps MIN_FUTURE events at least
    total = len(SOURCES) * options.events_per_source
    lam_future = max(FUTURE_SHARE * total - MIN_FUTURE, 0.5)
    lam_profile = max(total - FUTURE_SHARE * total - MIN_PROFILE, 0.5)
    activity = np.exp(0.35 * z[:, _ACT] - 0.35**2 / 2)
    n_profile = MIN_PROFILE + rng.poisson(lam_profile * activity)
    n_events = n_profile + MIN_FUTURE + rng.poisson(lam_future * activity)
    u = np.repeat(np.arange(n), n_events)
    first = np.concatenate([[0], np.cumsum(n_events)[:-1]])
    future = np.arange(len(u)) - first[u] >= n_profile[u]

    # times: profile in [c - PROFILE_DAYS, c), future in [c, c + FUTURE_DAYS); sorting per user keeps
    # the profile first. Every other attribute is drawn i.i.d. afterwards, so no reordering is needed.
    t0 = (options.start - date(1970, 1, 1)).days * DAY
    cut = PROFILE_DAYS * DAY + rng.integers(0, CUTOFF_SPREAD_DAYS * DAY, n)
    offset = np.where(
        future,
        cut[u] + rng.integers(0, FUTURE_DAYS * DAY, len(u)),
        cut[u] - 1 - rng.integers(0, PROFILE_DAYS * DAY, len(u)),
    )
    ts = t0 + (np.sort((u.astype(np.int64) << 32) | offset) & 0xFFFFFFFF)
    as_of = ts[first + n_profile]

    # what happens: noise events follow the background, the others the user's interests
    source = rng.integers(0, len(SOURCES), len(u)).astype(np.int8)
    noise = rng.random(len(u)) < options.noise
    logits = SHARPNESS * z[:, : len(INTERESTS)] + _BIAS
    mix = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)
    interest = (rng.random(len(u))[:, None] > cum[u, :-1]).sum(axis=1)
    background = rng.choice(len(TOPICS), len(u), p=_BACKGROUND)
    topic = np.where(noise, background, interest)
    p_high = np.where(noise, _BG_HIGH, _sigmoid(1.6 * z[u, _W] - 0.6))
    high = rng.random(len(u)) < p_high
    group = (source.astype(np.int64) * len(TOPICS) + topic) * 2 + high
    item = _ITEMS.start[group] + (rng.random(len(u)) * _ITEMS.length[group]).astype(np.int64)
    wealth_factor = np.where(noise, 0.0, 0.3 * z[u, _W])
    price = _ITEMS.price[item] * np.exp(0.35 * rng.standard_normal(len(u)) + wealth_factor)
    amount = np.where(_ITEMS.slot[item] == _AMOUNT, np.maximum(np.round(price, 2), 0.5), np.nan)
    slot_int = _ITEMS.lo[item] + (rng.random(len(u)) * _ITEMS.span[item]).astype(np.int64)
    city = rng.integers(0, len(CITIES), len(u)).astype(np.int8)

    # labels from the future window
    labels = np.zeros((n, len(TASKS)), dtype=np.int8)
    for k, task in enumerate(TASK_CATEGORIES):
        hit = future & _ITEMS.target[item, k]
        labels[:, TASKS.index(task)] = np.bincount(u[hit], minlength=n) > 0
    paid = future & (source == 0)
    spend = np.bincount(u[paid], weights=amount[paid], minlength=n)
    labels[:, TASKS.index("purchasing_power")] = spend >= SPEND_THRESHOLD

    return _Draws(
        user_id=user_id, n_events=n_events, n_profile=n_profile.astype(np.int64), as_of=as_of,
        features=features, labels=labels, ev_user=user_id[u], ts=ts, source=source, item=item,
        trait=np.where(noise, len(INTERESTS), topic).astype(np.int8), amount=amount, slot_int=slot_int,
        city=city,
    )  # fmt: skip


def _take(values: Sequence[str], codes: np.ndarray) -> pd.Series:
    """Strings by code, as a pandas `str` column."""
    return pc.take(pa.array(values), codes).to_pandas()


def _timestamps(seconds: np.ndarray) -> pd.Series:
    return pd.Series((seconds * 1_000_000).astype("datetime64[us]")).dt.tz_localize("UTC").astype(TS_DTYPE)


def _texts(d: _Draws) -> pd.Series:
    """pre + slot + post per event, built column-wise in Arrow (no Python loop over events)."""
    cents = np.rint(np.nan_to_num(d.amount) * 100).astype(np.int64)
    amount = pc.binary_join_element_wise(
        pc.cast(pa.array(cents // 100), pa.string()),
        pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0"),
        ".",
    )
    slot = pc.choose(
        pa.array(_ITEMS.slot[d.item]),
        pa.scalar(""),
        amount,
        pc.take(pa.array(CITIES), d.city),
        pc.take(pa.array([c.lower() for c in CITIES]), d.city),
        pc.cast(pa.array(d.slot_int), pa.string()),
    )
    return pc.binary_join_element_wise(
        pc.take(_ITEMS.pre, d.item), slot, pc.take(_ITEMS.post, d.item), ""
    ).to_pandas()


def _render(d: _Draws, card: DatasetCard) -> ContractTables:
    users = pd.DataFrame({"user_id": d.user_id, "split": pd.Series(split_for(d.user_id, card), dtype="str")})
    for i, f in enumerate(card.features):
        col = d.features[:, i]
        users[f.name] = _take(f.categories, col.astype(np.int64)) if f.categories else col
    events = pd.DataFrame(
        {
            "user_id": d.ev_user,
            "source": _take(SOURCES, d.source),
            "ts": _timestamps(d.ts),
            "text": _texts(d),
            "category": _take(_ITEMS.categories, _ITEMS.category[d.item]),
            "amount": d.amount,
            "trait": _take((*INTERESTS, NOISE), d.trait),
        }
    )
    labels = pd.DataFrame(
        {
            "user_id": np.repeat(d.user_id, len(TASKS)),
            "task": _take(TASKS, np.tile(np.arange(len(TASKS)), len(d.user_id))),
            "label": d.labels.ravel(),
        }
    )
    cutoffs = pd.DataFrame({"user_id": d.user_id, "as_of": _timestamps(d.as_of), "n_profile": d.n_profile})
    return ContractTables(users=users, events=events, labels=labels, cutoffs=cutoffs)


def _check_card(card: DatasetCard) -> None:
    """The generator writes sources, features and tasks in the card's order; they must agree."""
    ours = {"sources": SOURCES, "features": FEATURES, "tasks": TASKS}
    theirs = {
        "sources": tuple(card.sequence_sources),
        "features": tuple(f.name for f in card.features),
        "tasks": tuple(card.task_names),
    }
    if diff := [f"{k}: card {theirs[k]} vs generator {v}" for k, v in ours.items() if theirs[k] != v]:
        raise CardError(f"cards/{DATASET}.yaml and synthetic.py disagree; fix one of them: {'; '.join(diff)}")


def _chunks(options: SyntheticOptions, card: DatasetCard) -> Iterator[ContractTables]:
    cached: tuple[int, _Draws] | None = None  # a block that straddles two chunks is generated once
    for lo in range(0, options.n_users, options.chunk_users):
        hi = min(lo + options.chunk_users, options.n_users)
        parts = []
        for b in range(lo // BLOCK_USERS, (hi - 1) // BLOCK_USERS + 1):
            if cached is None or cached[0] != b:
                cached = (b, _block(options, b))
            base = b * BLOCK_USERS
            parts.append(cached[1].users(max(lo, base) - base, min(hi, base + BLOCK_USERS) - base))
        yield _render(_Draws.concat(parts), card)


def read_synthetic(options: SyntheticOptions | None = None) -> RawDataset:
    """The reader registered as `synthetic-multisource`: chunks of `chunk_users` users, ids 1..n_users."""
    options = options or SyntheticOptions()
    card = load_bundled_card(DATASET)
    _check_card(card)
    kept = options.model_dump(exclude={"chunk_users"})  # changes no row, so not part of the provenance
    return RawDataset(
        card=card,
        chunks=_chunks(options, card),
        n_users_hint=options.n_users,
        provenance={"reader": DATASET, **{k: str(v) for k, v in kept.items()}},
    )


def user_traits(options: SyntheticOptions | None = None) -> pd.DataFrame:
    """The latent traits of users 1..n_users (`user_id` plus one column per TRAITS), for evaluation."""
    options = options or SyntheticOptions()
    n_blocks = -(-options.n_users // BLOCK_USERS)
    z = np.concatenate([_traits(options.seed, b) for b in range(n_blocks)])[: options.n_users]
    return pd.DataFrame({"user_id": np.arange(1, options.n_users + 1, dtype=np.int64)}).join(
        pd.DataFrame(z, columns=list(TRAITS))
    )
