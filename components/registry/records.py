"""Request records: one row per user to embed, carrying the user's profile in the contract's shape.

A record (a pandas row, or one object of the scoring server's `dataframe_records`) holds:

    user_id       optional, echoed nowhere: the caller's own key
    <source>      one column per sequence source of the dataset card: the profile's event texts,
                  oldest first (the most recent `max_events` are kept, as in training)
    <feature>     one column per tabular feature of the card: a number, or a category as a string
    instruction   optional natural-language instruction
    task          optional probe task name of the card: its manual instruction is used

Without `instruction` and `task` the record gets the universal embedding. A missing source or
feature counts as empty (no events) or missing (the tabular embedder's "missing" value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.ingestion import ContractTables, DatasetCard, FeatureType
from components.modeling import build_profiles

USER_ID, INSTRUCTION, TASK = "user_id", "instruction", "task"
RESERVED = (USER_ID, INSTRUCTION, TASK)


class RecordError(ValueError):
    """A request record that cannot become a model input; the message names the row and column."""


def check_card(card: DatasetCard) -> DatasetCard:
    clash = sorted(set(RESERVED) & {*card.sequence_sources, *(f.name for f in card.features)})
    if clash:
        raise RecordError(
            f"dataset {card.name!r} names a source or feature {clash}, which request records reserve; "
            "rename it in the card"
        )
    return card


def records_from_tables(
    card: DatasetCard,
    tables: ContractTables,
    user_ids: Sequence[int],
    max_events: int | None = None,
    instruction: str | None = None,
    task: str | None = None,
) -> pd.DataFrame:
    """The request records of dataset users: their profile-window events and tabular values."""
    ids = [int(u) for u in user_ids]
    profiles = build_profiles(card, tables, ids, max_events)
    users = tables.users.set_index("user_id").loc[ids]
    out = pd.DataFrame({USER_ID: np.asarray(ids, dtype=np.int64)})
    for s in card.sequence_sources:
        out[s] = [list(p.events[s]) for p in profiles]
    for f in card.features:
        values = users[f.name].to_numpy()
        out[f.name] = (
            pd.to_numeric(values, errors="coerce").astype(np.float64)
            if f.type is FeatureType.NUMERIC
            else [None if pd.isna(v) else str(v) for v in values]
        )
    if instruction is not None:
        out[INSTRUCTION] = instruction
    if task is not None:
        out[TASK] = task
    return out


def tables_from_records(card: DatasetCard, records: pd.DataFrame) -> ContractTables:
    """Records as contract tables whose user ids are the row positions 0..n-1 (ids may repeat)."""
    n = len(records)
    users = pd.DataFrame({"user_id": np.arange(n, dtype=np.int64)})
    for f in card.features:
        col = records[f.name] if f.name in records else pd.Series([None] * n)
        users[f.name] = (
            _numbers(col.to_numpy(), f.name)
            if f.type is FeatureType.NUMERIC
            else [None if _missing(v) else str(v) for v in col.to_numpy()]
        )
    uid, source, text = [], [], []
    columns = {s: records[s].to_numpy() if s in records else [None] * n for s in card.sequence_sources}
    for i in range(n):
        for s in card.sequence_sources:
            texts = _texts(columns[s][i], row=i, column=s)
            uid += [i] * len(texts)
            source += [s] * len(texts)
            text += texts
    events = pd.DataFrame({"user_id": np.asarray(uid, dtype=np.int64), "source": source, "text": text})
    counts = events.groupby("user_id").size().reindex(users["user_id"], fill_value=0).to_numpy()
    # every event of a record is in the profile window: the caller sends only the profile
    cutoffs = pd.DataFrame({"user_id": users["user_id"], "n_profile": counts.astype(np.int64)})
    labels = pd.DataFrame({"user_id": pd.Series([], dtype=np.int64), "task": [], "label": []})
    return ContractTables(users=users, events=events, labels=labels, cutoffs=cutoffs)


def instructions_of(card: DatasetCard, records: pd.DataFrame) -> list[str | None]:
    """Each record's instruction: its `instruction`, else its `task`'s manual instruction, else None."""
    n = len(records)
    given = records[INSTRUCTION].to_numpy() if INSTRUCTION in records else [None] * n
    tasks = records[TASK].to_numpy() if TASK in records else [None] * n
    out: list[str | None] = []
    for i, (instruction, task) in enumerate(zip(given, tasks, strict=True)):
        instruction = None if _missing(instruction) or str(instruction) == "" else str(instruction)
        task = None if _missing(task) or str(task) == "" else str(task)
        if instruction is not None and task is not None:
            raise RecordError(f"record {i}: give `instruction` or `task`, not both")
        if task is not None:
            try:
                instruction = card.task(task).instruction
            except KeyError:
                raise RecordError(
                    f"record {i}: dataset {card.name!r} has no task {task!r}; known: {card.task_names}"
                ) from None
        out.append(instruction)
    return out


def signature(card: DatasetCard, dim: int):
    """The MLflow signature: the record columns in, an (n, dim) float32 matrix out; `batch_size`."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec

    check_card(card)
    cols = [ColSpec(DataType.long, USER_ID, required=False)]
    cols += [ColSpec(Array(DataType.string), s, required=False) for s in card.sequence_sources]
    cols += [
        ColSpec(DataType.double if f.type is FeatureType.NUMERIC else DataType.string, f.name, required=False)
        for f in card.features
    ]
    cols += [ColSpec(DataType.string, c, required=False) for c in (INSTRUCTION, TASK)]
    return ModelSignature(
        inputs=Schema(cols),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim))]),
        params=ParamSchema([ParamSpec("batch_size", DataType.long, 0)]),  # 0: the model's own
    )


def input_example(card: DatasetCard, tables: ContractTables, n: int = 2, max_events: int = 5) -> pd.DataFrame:
    """A few probe-split users of the dataset (a short profile each), the first under a task."""
    users = tables.users
    pool = users[users["split"] == "probe"] if "split" in users else users
    ids = (pool if len(pool) else users)["user_id"].astype(int).head(n).tolist()
    records = records_from_tables(card, tables, ids, max_events)
    records[TASK] = [card.tasks[0].name if i == 0 and card.tasks else None for i in range(len(records))]
    return records


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and lists are not missing
        return False


def _numbers(values: np.ndarray, column: str) -> np.ndarray:
    """A numeric feature's values as float64; missing stays NaN, text or an infinity is refused."""
    out = pd.to_numeric(values, errors="coerce").astype(np.float64)
    for row, (value, number) in enumerate(zip(values, out, strict=True)):
        if np.isinf(number) or (np.isnan(number) and not _missing(value)):
            raise RecordError(
                f"record {row}: column {column!r} must be a finite number or missing, got {value!r}"
            )
    return out


def _texts(value, row: int, column: str) -> list[str]:
    if _missing(value):
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise RecordError(
            f"record {row}: column {column!r} must be a list of event texts, got {type(value).__name__}"
        )
    texts = list(value)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise RecordError(f"record {row}: column {column!r} holds non-text events such as {bad[0]!r}")
    return texts


# -- a scoring request's body, checked before any of it is parsed into a frame -----------------------
class RequestError(ValueError):
    """A request the scoring server refuses; `status` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    """What one scoring request may hold (the server answers 413 / 400 beyond it)."""

    max_body_bytes: int = 16 * 2**20  # 1,024 users of 256 events of ~60 characters fit well within
    max_depth: int = 16  # our records nest 4 deep (body, records, record, event list)
    max_records: int = 1024


DEFAULT_LIMITS = RequestLimits()
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(body: bytes) -> int:
    """The deepest nesting of brackets and braces outside strings, without parsing (so without
    recursing): `json.loads` of a deeper body would raise RecursionError."""
    structure = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    step = np.isin(structure, (ord("["), ord("{"))).astype(np.int32) - np.isin(
        structure, (ord("]"), ord("}"))
    )
    return int(np.cumsum(step).max(initial=0))


def check_request(card: DatasetCard, body: bytes, limits: RequestLimits = DEFAULT_LIMITS) -> int:
    """Check a JSON scoring body against the card; returns its number of records.

    Raises RequestError: 413 for a body or a record count over `limits`; 400 for a body that is not
    UTF-8 JSON, too deep, or not `dataframe_records` / `dataframe_split`; 422 for a record whose field
    is unknown, of the wrong type, or an unknown category, and for a record with nothing in it.
    """
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"the body is {len(body):,} bytes; the limit is {limits.max_body_bytes:,}")
    if json_depth(body) > limits.max_depth:
        raise RequestError(400, f"the body nests deeper than {limits.max_depth} levels")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"the body is not UTF-8 JSON: {e}") from None
    records = _records_of(payload)
    if len(records) > limits.max_records:
        raise RequestError(
            413, f"{len(records):,} records in one request; the limit is {limits.max_records:,}"
        )
    check_card(card)
    for i, record in enumerate(records):
        _check_record(card, i, record)
    return len(records)


def _records_of(payload) -> list:
    if isinstance(payload, dict) and "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list):
            raise RequestError(400, "`dataframe_records` must be a list of records (JSON objects)")
        return records
    if isinstance(payload, dict) and "dataframe_split" in payload:
        split = payload["dataframe_split"]
        ok = (
            isinstance(split, dict)
            and isinstance(split.get("columns"), list)
            and isinstance(split.get("data"), list)
        )
        if not ok or not all(isinstance(r, list) and len(r) == len(split["columns"]) for r in split["data"]):
            raise RequestError(400, "`dataframe_split` must hold `columns` and `data` rows of that length")
        return [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
    raise RequestError(400, "send {\"dataframe_records\": [...]} or {\"dataframe_split\": {...}} "
                            "(see the README's scoring section)")  # fmt: skip


def _check_record(card: DatasetCard, i: int, record) -> None:
    if not isinstance(record, dict):
        raise RequestError(422, f"record {i} is a {type(record).__name__}, not an object of fields")
    sources, features = card.sequence_sources, {f.name: f for f in card.features}
    unknown = sorted(set(record) - {*RESERVED, *sources, *features})
    if unknown:
        raise RequestError(422, f"record {i}: unknown field(s) {unknown}; this model takes "
                                f"{[*RESERVED, *sources, *features]}")  # fmt: skip
    present = False
    for s in sources:
        events = record.get(s)
        if events is None:
            continue
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise RequestError(422, f"record {i}: `{s}` must be a list of event texts (strings)")
        present |= bool(events)
    for name, f in features.items():
        value = record.get(name)
        if value is None:
            continue
        present = True
        if f.type is FeatureType.NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(422, f"record {i}: `{name}` must be a number, got {value!r}")
        elif not isinstance(value, str):
            raise RequestError(422, f"record {i}: `{name}` must be a category (a string), got {value!r}")
        elif f.categories and value not in f.categories:
            raise RequestError(422, f"record {i}: `{name}` {value!r} is not one of {f.categories}")
    for key in (INSTRUCTION, TASK):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise RequestError(422, f"record {i}: `{key}` must be a string, got {type(record[key]).__name__}")
    user_id = record.get(USER_ID)
    if user_id is not None and (isinstance(user_id, bool) or not isinstance(user_id, int)):
        raise RequestError(422, f"record {i}: `{USER_ID}` must be an integer, got {user_id!r}")
    if not present:
        raise RequestError(422, f"record {i} carries no event and no feature value: nothing to embed")
