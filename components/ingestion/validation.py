"""Validation of the contract's tables: types, expectations, cross-table rules, quarantine.

A chunk goes through three layers; a row that fails any of them goes to quarantine with its reasons
and every other row goes on:

1. table-level structure (missing columns): the whole dataset is rejected with one message that
   names every problem (`ContractError`); nothing row-level can be trusted then;
2. row-level types (ids that are not integers, unparseable timestamps, non-numeric features,
   non-finite numbers, text that is not UTF-8), checked here in pandas;
3. the Great Expectations suites of `expectations.py` (nulls, ranges, sets, lengths, uniqueness),
   then cross-table rules: every event, label and cut-off belongs to a valid user, every user has a
   cut-off, a user id is unique across chunks, and the split follows the card's rule, so a probe user
   can never sit in a training split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components.ingestion.card import DatasetCard, FeatureType
from components.ingestion.contract import (
    REQUIRED_COLUMNS,
    TS_DTYPE,
    ContractTables,
    Table,
    event_order,
    split_for,
)

ROW = "_row"  # positional row id added before validation, so failures map back to input rows
REASON = "reason"
CHECK = "check"


class ContractError(ValueError):
    """The input does not follow the data contract as a whole (not a row-level defect)."""


@dataclass
class ChunkResult:
    clean: ContractTables
    quarantined: dict[Table, pd.DataFrame]  # original columns (as text) + ROW, REASON, CHECK
    rows_in: dict[Table, int]


@dataclass
class _Verdicts:
    """Reasons collected per table and row; a row may fail several checks."""

    reasons: dict[Table, dict[int, list[tuple[str, str]]]] = field(
        default_factory=lambda: {t: {} for t in Table}
    )

    def add(self, table: Table, rows, check: str, reason: str) -> None:
        bucket = self.reasons[table]
        for r in rows:
            bucket.setdefault(int(r), []).append((check, reason))

    def bad(self, table: Table) -> set[int]:
        return set(self.reasons[table])


def check_structure(chunk: ContractTables, card: DatasetCard) -> None:
    """Raise one ContractError naming every missing column of every table."""
    problems = []
    for table, frame in chunk.items():
        if not isinstance(frame, pd.DataFrame):
            problems.append(f"{table.filename}: expected a table, got {type(frame).__name__}")
            continue
        required = list(REQUIRED_COLUMNS[table])
        if table is Table.USERS:
            required += [f.name for f in card.features]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            problems.append(f"{table.filename} lacks column(s) {missing} (has {list(frame.columns)})")
    if problems:
        raise ContractError(
            f"dataset {card.name!r} does not follow the data contract:\n  - " + "\n  - ".join(problems)
        )


# -- layer 2: types ----------------------------------------------------------------------------
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_EXACT = 2**53  # a float64 holds every integer up to here exactly, and not all beyond


def _int_value(v) -> int | None | str:
    """One id as an exact Python int; None when missing; a reason (str) when it is not an id."""
    if v is None or v is pd.NA or (isinstance(v, float | np.floating) and np.isnan(v)):
        return None
    if isinstance(v, bool | np.bool_):
        return "not an integer"
    if isinstance(v, int | np.integer):
        value = int(v)
    elif isinstance(v, float | np.floating):
        if not np.isfinite(v) or not float(v).is_integer():
            return "not an integer"
        if abs(v) > FLOAT_EXACT:  # already rounded by whoever wrote it as a float: not the real id
            return f"a float beyond 2^53, so not an exact integer ({v!r}); store ids as integers or text"
        value = int(v)
    elif isinstance(v, str | bytes):
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        try:
            value = int(text.strip())
        except ValueError:
            return "not an integer"
    else:
        return "not an integer"
    if not INT64_MIN <= value <= INT64_MAX:
        return "outside the 64-bit integer range"
    return value


def _to_int_exact(s: pd.Series) -> tuple[pd.Series, dict[str, np.ndarray]]:
    """Integer ids as Int64, read exactly (never through float64, which rounds ids above 2^53).

    Returns the column and, per reason, the mask of values present but not valid ids.
    """
    if pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s):
        if pd.api.types.is_unsigned_integer_dtype(s):
            out = s.astype("UInt64")
            over = (out > INT64_MAX).fillna(False).to_numpy()
            return out.where(~over).astype("Int64"), {"outside the 64-bit integer range": over}
        return s.astype("Int64"), {}
    if pd.api.types.is_float_dtype(s):
        x = s.to_numpy(np.float64, na_value=np.nan)
        present = ~np.isnan(x)
        finite = np.isfinite(x)
        integral = finite & (np.round(np.where(finite, x, 0)) == np.where(finite, x, 0))
        inexact = integral & (np.abs(np.where(finite, x, 0)) > FLOAT_EXACT)
        ok = integral & ~inexact
        out = pd.Series(pd.array(np.where(ok, x, 0).astype(np.int64), dtype="Int64"), index=s.index)
        out[~ok] = pd.NA
        why = "a float beyond 2^53, so not an exact integer; store ids as integers or text"
        return out, {"not an integer": present & ~integral, why: inexact}
    values = [_int_value(v) for v in s.to_numpy(dtype=object)]
    out = pd.Series(pd.array([v if isinstance(v, int) else None for v in values], dtype="Int64"),
                    index=s.index)  # fmt: skip
    reasons: dict[str, np.ndarray] = {}
    for i, v in enumerate(values):
        if isinstance(v, str):
            reasons.setdefault(v, np.zeros(len(values), bool))[i] = True
    return out, reasons


def _to_ts(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        return ts.astype(TS_DTYPE), np.zeros(len(s), bool)
    if pd.api.types.is_numeric_dtype(s):  # unix seconds
        ts = pd.to_datetime(s, unit="s", utc=True, errors="coerce")
    else:
        ts = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
    bad = s.notna().to_numpy() & ts.isna().to_numpy()
    return ts.astype(TS_DTYPE), bad


def _to_text(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Strings as pandas strings; bytes must decode as UTF-8, other objects are wrong types."""
    values = s.to_numpy(dtype=object)
    bad = np.zeros(len(values), bool)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, str):
            try:
                v.encode("utf-8")  # lone surrogates: undecodable bytes read with surrogateescape
                out[i] = v
            except UnicodeEncodeError:
                out[i], bad[i] = None, True
        elif v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out[i] = None
        elif isinstance(v, bytes):
            try:
                out[i] = v.decode("utf-8")
            except UnicodeDecodeError:
                out[i], bad[i] = None, True
        else:
            out[i], bad[i] = None, True
    return pd.Series(out, index=s.index, dtype="string"), bad


def _fast_text(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s):
        return s.astype("string"), np.zeros(len(s), bool)
    return _to_text(s)


def _coerce(table: Table, df: pd.DataFrame, card: DatasetCard, v: _Verdicts) -> pd.DataFrame:
    out = df.copy()
    rows = out[ROW].to_numpy()

    def apply(col: str, conv, why: str) -> None:
        out[col], bad = conv(out[col])
        v.add(table, rows[bad], f"type({col})", why)

    def apply_int(col: str) -> None:
        out[col], bad = _to_int_exact(out[col])
        for reason, mask in bad.items():
            v.add(table, rows[mask], f"type({col})", f"{col} is {reason}")

    apply_int("user_id")
    if table is Table.USERS:
        apply("split", _fast_text, "split is not text")
        for f in card.features:
            if f.type is FeatureType.NUMERIC:
                raw = out[f.name]
                num = pd.to_numeric(raw, errors="coerce").astype("float64")
                bad = raw.notna().to_numpy() & num.isna().to_numpy()
                v.add(table, rows[bad], f"type({f.name})", f"{f.name} is not a number")
                inf = np.isinf(num.to_numpy())
                v.add(table, rows[inf], f"finite({f.name})", f"{f.name} is infinite")
                out[f.name] = num.where(~inf)
            else:
                apply(f.name, _fast_text, f"{f.name} is not text")
    elif table is Table.EVENTS:
        apply("source", _fast_text, "source is not text")
        apply("ts", _to_ts, "ts is not a parseable timestamp")
        apply("text", _fast_text, "text is not valid UTF-8 text")
    elif table is Table.LABELS:
        apply("task", _fast_text, "task is not text")
        label = pd.to_numeric(out["label"], errors="coerce")
        bad = out["label"].notna().to_numpy() & label.isna().to_numpy()
        v.add(table, rows[bad], "type(label)", "label is not a number")
        out["label"] = label
    elif table is Table.CUTOFFS:
        apply("as_of", _to_ts, "as_of is not a parseable timestamp")
        apply_int("n_profile")
    return out


# -- cross-table: the cut-off against the user's events ------------------------------------------
def canonical_order(events: pd.DataFrame) -> pd.DataFrame:
    """Events in the contract's canonical order (`contract.event_order`): shuffled input gives the
    same table, so the same data always cuts into the same profile and future."""
    return events.sort_values(event_order(events), kind="stable", key=_sortable)


def _sortable(column: pd.Series) -> pd.Series:
    """Mixed-type object columns (an `item_id` of ints and text) sort as text; typed ones as they are."""
    return column.astype("string") if pd.api.types.is_object_dtype(column) else column


def cutoff_violations(events: pd.DataFrame, cutoffs: pd.DataFrame) -> dict[str, set[int]]:
    """Users whose cut-off contradicts their (valid) events, per reason.

    The contract: the profile is the first `n_profile` events in canonical order, all at or before
    `as_of`, and no later event is before it. A cut-off that breaks this would put future data into
    the profile (or ask for events the user does not have), so the user is quarantined.
    """
    if cutoffs.empty:
        return {}
    ev = canonical_order(events[event_order(events)])
    ev = ev.assign(_pos=ev.groupby("user_id", sort=False).cumcount().to_numpy())
    cut = cutoffs.drop_duplicates("user_id").set_index("user_id")
    n_profile = ev["user_id"].map(cut["n_profile"])
    as_of = ev["user_id"].map(cut["as_of"])
    known = n_profile.notna().to_numpy()
    in_profile = known & (ev["_pos"].to_numpy() < n_profile.fillna(0).to_numpy())
    ts, when = ev["ts"], as_of
    late = in_profile & (ts > when).fillna(False).to_numpy()
    early = known & ~in_profile & (ts < when).fillna(False).to_numpy()
    counts = ev.groupby("user_id").size().reindex(cut.index, fill_value=0)
    too_many = cut.index[(cut["n_profile"].astype("int64") > counts).to_numpy()]
    out = {
        "profile event(s) after the cut-off's as_of (future data in the profile)": set(ev["user_id"][late]),
        "event(s) after the profile dated before the cut-off's as_of": set(ev["user_id"][early]),
        "n_profile exceeds the user's number of valid events": set(too_many),
    }
    return {reason: {int(u) for u in ids} for reason, ids in out.items() if ids}


# -- the chunk ----------------------------------------------------------------------------------
class ChunkValidator:
    """Validates chunks of whole users in order, remembering the users seen in earlier chunks."""

    def __init__(self, card: DatasetCard, now: pd.Timestamp | None = None):
        from components.ingestion.expectations import SuiteRunner  # GX import is slow: only here

        self.card = card
        self.now = now if now is not None else pd.Timestamp.now(tz="UTC")
        self.suites = SuiteRunner(card, self.now)
        self.seen_users: set[int] = set()
        self.failed_checks: Counter[tuple[Table, str]] = Counter()

    def validate(self, chunk: ContractTables) -> ChunkResult:
        check_structure(chunk, self.card)
        v = _Verdicts()
        raw = {t: f.reset_index(drop=True) for t, f in chunk.items()}
        work = {}
        for t, f in raw.items():
            f = f.assign(**{ROW: np.arange(len(f))})
            work[t] = _coerce(t, f, self.card, v)

        def alive(t: Table) -> pd.DataFrame:
            bad = v.bad(t)
            f = work[t]
            return f[~f[ROW].isin(bad)] if bad else f

        for t in Table:  # expectations run on rows that passed the type layer
            for fail in self.suites.run(t, alive(t)):
                v.add(t, fail.rows, fail.expectation, fail.reason)

        users = alive(Table.USERS)
        ids = users["user_id"].astype("int64")
        again = ids.isin(self.seen_users).to_numpy()
        v.add(Table.USERS, users[ROW][again], "unique_across_chunks(user_id)", "user_id already seen")
        if self.card.split is not None:
            expected = split_for(ids.to_numpy(), self.card)
            leak = (users["split"].to_numpy() != expected) & (expected == "probe")
            v.add(Table.USERS, users[ROW][leak], "probe_split(user_id)",
                  "probe user (by the card's split rule) placed in the train split")  # fmt: skip
            wrong = (users["split"].to_numpy() != expected) & (expected != "probe")
            v.add(
                Table.USERS, users[ROW][wrong], "split_rule(user_id)", "split disagrees with the card's rule"
            )

        listed = set(work[Table.USERS]["user_id"].dropna().astype("int64"))

        def drop_orphans(t: Table) -> None:
            """Rows of `t` whose user is not (or no longer) valid; the reason says which."""
            valid = set(alive(Table.USERS)["user_id"].astype("int64"))
            f = alive(t)
            orphan = ~f["user_id"].isin(valid | self.seen_users).to_numpy()
            of_rejected = f["user_id"].isin(listed - valid).to_numpy()
            v.add(t, f[ROW][orphan & of_rejected], "known_user(user_id)", "its user's row was quarantined")
            unknown = "orphan row: user_id is not in users"
            v.add(t, f[ROW][orphan & ~of_rejected], "known_user(user_id)", unknown)

        # a user without a valid cut-off cannot be split into profile and future
        drop_orphans(Table.CUTOFFS)
        with_cutoff = set(alive(Table.CUTOFFS)["user_id"].astype("int64"))
        users = alive(Table.USERS)
        no_cut = ~users["user_id"].isin(with_cutoff).to_numpy()
        v.add(Table.USERS, users[ROW][no_cut], "has_cutoff(user_id)", "user has no valid cut-off row")
        users = alive(Table.USERS)
        for reason, ids in cutoff_violations(alive(Table.EVENTS), alive(Table.CUTOFFS)).items():
            rows_of = users[ROW][users["user_id"].isin(ids).to_numpy()]
            v.add(Table.USERS, rows_of, "cutoff_consistent(user_id)", reason)
        drop_orphans(Table.CUTOFFS)
        drop_orphans(Table.EVENTS)
        drop_orphans(Table.LABELS)
        valid_ids = set(alive(Table.USERS)["user_id"].astype("int64"))
        self.seen_users |= valid_ids

        clean = {t.value: self._finish(t, alive(t)) for t in Table}
        quarantined = {t: self._quarantine(t, raw[t], v) for t in Table}
        for t, rows in v.reasons.items():
            for reasons in rows.values():
                for check, _ in reasons:
                    self.failed_checks[(t, check)] += 1
        return ChunkResult(ContractTables(**clean), quarantined, {t: len(f) for t, f in raw.items()})

    def _finish(self, t: Table, f: pd.DataFrame) -> pd.DataFrame:
        f = f.drop(columns=[ROW])
        f["user_id"] = f["user_id"].astype("int64")
        if t is Table.EVENTS:
            f = canonical_order(f)
        elif t is Table.LABELS:
            f["label"] = f["label"].astype("int8")
        elif t is Table.CUTOFFS:
            f["n_profile"] = f["n_profile"].astype("int64")
        return f.reset_index(drop=True)

    @staticmethod
    def _quarantine(t: Table, raw: pd.DataFrame, v: _Verdicts) -> pd.DataFrame:
        bad = v.reasons[t]
        if not bad:
            return pd.DataFrame()
        rows = sorted(bad)
        # original values as text: a defective row may hold values no typed column can store
        out = raw.iloc[rows].map(_as_text)
        out = out.astype("string")
        out.insert(0, ROW, rows)
        out[REASON] = ["; ".join(dict.fromkeys(r for _, r in bad[i])) for i in rows]
        out[CHECK] = ["; ".join(dict.fromkeys(c for c, _ in bad[i])) for i in rows]
        return out.reset_index(drop=True)


def _as_text(x) -> str | None:
    """A quarantined value as storable text: bytes as their repr, lone surrogates escaped."""
    if x is None:
        return None
    if isinstance(x, bytes):
        return repr(x)
    return str(x).encode("utf-8", "backslashreplace").decode("utf-8")
