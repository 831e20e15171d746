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

from collections.abc import Sequence

import numpy as np
import pandas as pd

from components.ingestion.card import DatasetCard, FeatureType
from components.ingestion.contract import ContractTables
from components.modeling.profile import build_profiles

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
