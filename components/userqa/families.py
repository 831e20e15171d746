"""UserQA task families: what each asks, in several paraphrases, and the grounded facts that answer it.

Descriptive and diagnostic families read a user's profile window only; forward-looking families read
the future window only; the general family (no instruction) summarises the profile. Each family has
a stable id (its name) and a stable integer `task_id`, used later for task routing (TMoLE) and
sampling (S2Sched): never renumber, only append.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from components.userqa.records import Facts, Window
from components.userqa.view import EventView

GENERAL = "general"


@dataclass(frozen=True)
class Family:
    name: str
    task_id: int
    kind: str  # descriptive, diagnostic, predictive, general
    window: Window
    paraphrases: tuple[str, ...]  # with {items}, {terms}, {events} placeholders; () for general
    facts: Callable[[int, pd.DataFrame, EventView], Facts | None]
    applies: Callable[[EventView], bool] = lambda view: True

    def instructions(self, view: EventView) -> list[str]:
        lx = view.lexicon
        return [
            p.format(items=lx.items, terms=lx.terms, events=lx.events, item=lx.item) for p in self.paraphrases
        ]


def _pct(x: float) -> int:
    return int(round(100 * x))


def _term_shares(df: pd.DataFrame) -> pd.Series:
    terms = df["terms"].explode().dropna()
    return (terms.value_counts() / max(len(df), 1)).sort_values(ascending=False, kind="stable")


def _facts(user, family, window, statements, terms=(), numbers=(), direction=None) -> Facts:
    return Facts(
        user, family, window, tuple(statements), frozenset(terms), tuple(float(n) for n in numbers), direction
    )


# -- profile window -------------------------------------------------------------------------------
def favourite_terms(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    shares = _term_shares(df).head(3)
    if shares.empty:
        return None
    lx = view.lexicon
    parts = [f"{t} ({_pct(s)}%)" for t, s in shares.items()]
    statements = [f"The {lx.terms} that appear most in this user's {lx.events} are " + _join(parts) + "."]
    numbers = [_pct(s) for s in shares]
    if view.has_score:
        top = shares.index[0]
        mean = df.loc[df["terms"].map(lambda ts, top=top: top in ts), "score"].mean()
        statements.append(f"They give {top} {lx.items} {mean:.1f} stars on average.")
        numbers.append(round(mean, 1))
    return _facts(user, "favourite_terms", Window.PROFILE, statements, shares.index, numbers)


def avoided_terms(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    lx = view.lexicon
    if view.has_score:
        per = df.explode("terms").dropna(subset=["terms"]).groupby("terms")["score"].agg(["mean", "size"])
        per = per[per["size"] >= 3].sort_values(["mean", "size"], kind="stable")
        if per.empty:
            return None
        worst = per.head(2)
        parts = [f"{t} ({m:.1f} stars on average)" for t, m in worst["mean"].items()]
        statement = f"The {lx.terms} this user rates lowest are " + _join(parts) + "."
        return _facts(user, "avoided_terms", Window.PROFILE, [statement], worst.index, worst["mean"].round(1))
    seen = set(df["terms"].explode().dropna())
    common = [t for t in view.popular_terms if t not in seen][:3]
    if not common:
        return None
    statement = f"This user has no {lx.events} in popular {lx.terms} such as " + _join(common) + "."
    return _facts(user, "avoided_terms", Window.PROFILE, [statement], common)


def value_habits(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    lx = view.lexicon
    if view.has_score and df["score"].notna().any():
        s = df["score"].dropna()
        mean, top, low = s.mean(), (s >= 5).mean(), (s <= 2).mean()
        style = "generous" if mean >= 4.0 else "critical" if mean < 3.2 else "balanced"
        statements = [
            f"This user is a {style} rater: {mean:.1f} stars on average.",
            f"{_pct(top)}% of their {lx.events} are 5 stars and {_pct(low)}% are 1 or 2 stars.",
        ]
        return _facts(
            user, "value_habits", Window.PROFILE, statements, (), [round(mean, 1), _pct(top), _pct(low)]
        )
    if view.has_amount and df["amount"].notna().any():
        a = df["amount"].dropna()
        big = (a >= 500).mean()
        style = "big spender" if a.median() >= 200 else "modest spender"
        statements = [
            f"This user is a {style}: a typical payment is {a.median():.0f} CNY.",
            f"{_pct(big)}% of their payments are 500 CNY or more, {a.sum():.0f} CNY in total.",
        ]
        numbers = [round(a.median()), _pct(big), round(a.sum()), 500]
        return _facts(user, "value_habits", Window.PROFILE, statements, (), numbers)
    return None


def era_preference(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    y = df["year"].dropna()
    if y.empty:
        return None
    lx = view.lexicon
    mean, old, new = y.mean(), (y < 1980).mean(), (y >= 1995).mean()
    leaning = "older" if old >= 0.3 else "recent" if new >= 0.5 else "mixed-era"
    statements = [
        f"This user prefers {leaning} {lx.items}: released in {mean:.0f} on average.",
        f"{_pct(old)}% were released before 1980 and {_pct(new)}% in 1995 or later.",
    ]
    return _facts(
        user,
        "era_preference",
        Window.PROFILE,
        statements,
        (),
        [round(mean), _pct(old), _pct(new), 1980, 1995],
    )


def taste_breadth(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    shares = _term_shares(df)
    if shares.empty:
        return None
    lx = view.lexicon
    n, top = len(shares), shares.iloc[0]
    wide = n >= 0.5 * max(len(view.vocabulary), 1)
    style = "focused" if top >= 0.5 else "broad" if wide else "moderately varied"
    statements = [
        f"This user has {style} taste: {n} different {lx.terms}, the largest being {shares.index[0]}."
    ]
    return _facts(user, "taste_breadth", Window.PROFILE, statements, [shares.index[0]], [n])


def activity_pattern(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    if df.empty:
        return None
    lx = view.lexicon
    ts = pd.to_datetime(df["ts"])
    days = ts.dt.floor("D").nunique()
    weekend = (ts.dt.dayofweek >= 5).mean()
    hour = ts.dt.hour
    part = max(
        [("morning", ((hour >= 5) & (hour < 12)).mean()), ("afternoon", ((hour >= 12) & (hour < 18)).mean()),
         ("evening", ((hour >= 18) | (hour < 5)).mean())],
        key=lambda x: x[1],
    )[0]  # fmt: skip
    statements = [
        f"This user has {len(df)} {lx.events} on {_n(days, 'day')}, {len(df) / days:.1f} per active day.",
        f"{_pct(weekend)}% of them happen at weekends, mostly in the {part} (UTC).",
    ]
    return _facts(
        user,
        "activity_pattern",
        Window.PROFILE,
        statements,
        (),
        [len(df), days, round(len(df) / days, 1), _pct(weekend)],
    )


def recent_shift(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    k = len(df) // 4
    if k < 4:
        return None
    early, late = df.iloc[:-k], df.iloc[-k:]
    lx = view.lexicon
    top_early, top_late = _term_shares(early), _term_shares(late)
    if top_early.empty or top_late.empty:
        return None
    a, b = top_early.index[0], top_late.index[0]
    statements = [
        f"Earlier this user's {lx.events} were mostly about {a}; recently mostly about {b}."
        if a != b else f"This user's recent {lx.events} stay focused on {a}, as before."
    ]  # fmt: skip
    numbers, direction = [], None
    if view.has_score:
        e, late_mean = early["score"].mean(), late["score"].mean()
        direction = "up" if late_mean - e > 0.2 else "down" if e - late_mean > 0.2 else "same"
        word = {"up": "higher than", "down": "lower than", "same": "about the same as"}[direction]
        statements.append(f"Their recent ratings are {word} before: {late_mean:.1f} versus {e:.1f} stars.")
        numbers = [round(late_mean, 1), round(e, 1)]
    return _facts(user, "recent_shift", Window.PROFILE, statements, {a, b}, numbers, direction)


def source_mix(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    shares = df["source"].value_counts(normalize=True)
    if shares.empty:
        return None
    parts = [f"{s.replace('_', ' ')} ({_pct(p)}%)" for s, p in shares.items()]
    statements = ["This user's activity is split between " + _join(parts) + "."]
    return _facts(user, "source_mix", Window.PROFILE, statements, (), [_pct(p) for p in shares])


# -- future window -----------------------------------------------------------------------------------
def future_terms(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    lx = view.lexicon
    liked = df[df["score"] >= 4] if view.has_score else df
    shares = _term_shares(liked).head(2)
    if shares.empty:
        statement = f"In their next {lx.events} this user rates no {lx.item} 4 stars or more."
        return _facts(user, "future_terms", Window.FUTURE, [statement], (), [4])
    verb = "rate highly" if view.has_score else "turn to"
    statement = (
        f"In their next {lx.events} this user will {verb} " + _join(list(shares.index)) + f" {lx.items}."
    )
    return _facts(user, "future_terms", Window.FUTURE, [statement], shares.index)


def future_activity(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    if df.empty:
        return None
    lx = view.lexicon
    ts = pd.to_datetime(df["ts"])
    span = max((ts.max() - ts.min()).total_seconds() / 86400, 1.0)
    days = ts.dt.floor("D").nunique()
    level = "very active" if len(df) / span >= 1 else "occasional"
    statements = [
        f"This user will be {level}: {len(df)} more {lx.events} on {days} days over the next {span:.0f} days."
    ]
    return _facts(user, "future_activity", Window.FUTURE, statements, (), [len(df), days, round(span)])


def future_loyalty(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    shares = _term_shares(df)
    if shares.empty:
        return None
    lx = view.lexicon
    top, share = shares.index[0], shares.iloc[0]
    if share >= 0.5:
        statement = f"Their next {lx.events} will concentrate on {top} ({_pct(share)}%)."
    else:
        spread = f"{len(shares)} {lx.terms}, led by {top} ({_pct(share)}%)"
        statement = f"Their next {lx.events} will spread over {spread}."
    return _facts(user, "future_loyalty", Window.FUTURE, [statement], [top], [_pct(share), len(shares)])


def general(user: int, df: pd.DataFrame, view: EventView) -> Facts | None:
    """The holistic summary: favourite terms, habits, breadth and activity, from the profile."""
    parts = [f(user, df, view) for f in (favourite_terms, value_habits, taste_breadth, activity_pattern)]
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return Facts(
        user, GENERAL, Window.PROFILE,
        tuple(s for p in parts for s in p.statements[:1]),
        frozenset().union(*(p.terms for p in parts)),
        tuple(n for p in parts for n in p.numbers),
    )  # fmt: skip


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _join(parts: list[str]) -> str:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


FAMILIES: tuple[Family, ...] = (
    Family("favourite_terms", 1, "descriptive", Window.PROFILE, (
        "Which {terms} does this user like most?",
        "What kinds of {items} does this user prefer?",
        "Describe this user's favourite {terms}.",
        "Which {terms} dominate this user's history?",
        "What are the main interests of this user among {items}?",
        "Summarise this user's preferred {terms}.",
    ), favourite_terms),
    Family("avoided_terms", 2, "descriptive", Window.PROFILE, (
        "Which {terms} does this user dislike or avoid?",
        "What kinds of {items} does this user not enjoy?",
        "Name the {terms} this user cares least about.",
        "Which {terms} would be a poor recommendation for this user?",
        "What does this user tend to stay away from?",
    ), avoided_terms),
    Family("value_habits", 3, "diagnostic", Window.PROFILE, (
        "How does this user rate what they watch?",
        "Is this user generous or critical?",
        "Describe this user's rating or spending habits.",
        "How much value does this user give or spend per {item}?",
        "What is typical of this user's scores or payments?",
    ), value_habits, lambda v: v.has_score or v.has_amount),
    Family("era_preference", 4, "descriptive", Window.PROFILE, (
        "Does this user prefer old or recent {items}?",
        "From which era are the {items} this user watches?",
        "Describe this user's taste in terms of release years.",
        "Is this user into classics or new releases?",
        "How old are the {items} this user tends to choose?",
    ), era_preference, lambda v: v.has_year),
    Family("taste_breadth", 5, "diagnostic", Window.PROFILE, (
        "How broad is this user's taste?",
        "Does this user explore many {terms} or stick to a few?",
        "How varied are this user's {items}?",
        "Is this user a specialist or a generalist?",
        "How diverse is this user's history across {terms}?",
    ), taste_breadth),
    Family("activity_pattern", 6, "descriptive", Window.PROFILE, (
        "How active is this user?",
        "Describe when and how often this user is active.",
        "What does this user's activity pattern look like?",
        "How frequently does this user engage?",
        "Is this user a heavy or a light user, and when?",
    ), activity_pattern),
    Family("recent_shift", 7, "diagnostic", Window.PROFILE, (
        "Has this user's taste changed recently?",
        "How do this user's recent {events} differ from earlier ones?",
        "Is this user drifting towards new {terms}?",
        "What has changed in this user's behaviour lately?",
        "Compare this user's recent and earlier {items}.",
    ), recent_shift),
    Family("source_mix", 8, "descriptive", Window.PROFILE, (
        "Which channels does this user use most?",
        "How is this user's activity spread across sources?",
        "Where does this user spend most of their activity?",
        "Which parts of the app does this user rely on?",
        "Describe this user's mix of activity sources.",
    ), source_mix, lambda v: len(v.sources) > 1),
    Family("future_terms", 9, "predictive", Window.FUTURE, (
        "Which {terms} will this user enjoy next?",
        "Predict the {items} this user will like in the near future.",
        "What will this user turn to next?",
        "Which {terms} should we recommend to this user now?",
        "What will this user engage with positively soon?",
    ), future_terms),
    Family("future_activity", 10, "predictive", Window.FUTURE, (
        "How active will this user be in the coming weeks?",
        "Predict this user's upcoming activity level.",
        "Will this user stay engaged soon?",
        "How many {events} should we expect from this user next?",
        "Forecast this user's near-term engagement.",
    ), future_activity),
    Family("future_loyalty", 11, "predictive", Window.FUTURE, (
        "Will this user stick to one kind of {item} next?",
        "Will this user's next {events} be focused or varied?",
        "Predict how concentrated this user's upcoming {terms} will be.",
        "Is this user about to explore or to repeat?",
        "What will dominate this user's next {events}?",
    ), future_loyalty),
    Family(GENERAL, 0, "general", Window.PROFILE, (), general),
)  # fmt: skip

BY_NAME = {f.name: f for f in FAMILIES}


def applicable(view: EventView) -> list[Family]:
    return [f for f in FAMILIES if f.applies(view)]
