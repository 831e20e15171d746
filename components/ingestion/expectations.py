"""Great Expectations 1.x suites for the contract's tables, built from the dataset card.

One suite per table. Each expectation carries a `meta.reason` template so a failed row gets a
message a person can act on; `validation.py` turns the unexpected rows into quarantine entries.
Importing Great Expectations takes seconds, so this module is only imported where validation runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from components.ingestion.card import DatasetCard, FeatureType
from components.ingestion.contract import Split, Table
from components.ingestion.validation import ROW


def gx_modules():
    """(great_expectations, great_expectations.expectations), imported with usage analytics off:
    GX reads the switch when it is first imported, so it is set here, never at our import time."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def quiet_context(gx, mode: str, **kwargs):
    """A GX data context without progress bars (a bar per validated chunk would drown ours)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode=mode, **kwargs)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


@dataclass(frozen=True)
class Failure:
    """One expectation that failed on some rows of one table."""

    table: Table
    expectation: str  # e.g. "expect_column_values_to_be_in_set(source)"
    reason: str  # human message
    rows: list[int]  # values of ROW


def _exp(cls, reason: str, **kwargs):
    return cls(**kwargs, meta={"reason": reason})


def build_suites(card: DatasetCard, now: pd.Timestamp) -> dict[Table, list]:
    """The expectations per table for this card; `now` bounds timestamps from above."""
    _, gxe = gx_modules()
    earliest = pd.Timestamp(card.earliest_ts, tz="UTC")
    ts_range = {"min_value": earliest, "max_value": now}
    ts_why = f"is outside [{earliest.date()}, now]: unparseable, too old or in the future"
    not_null = lambda col: _exp(gxe.ExpectColumnValuesToNotBeNull, f"{col} is missing", column=col)  # noqa: E731

    users = [
        not_null("user_id"),
        _exp(gxe.ExpectColumnValuesToBeUnique, "user_id appears more than once in users", column="user_id"),
        _exp(
            gxe.ExpectColumnValuesToBeInSet,
            f"split must be one of {[s.value for s in Split]}",
            column="split",
            value_set=[s.value for s in Split],
        ),
    ]
    for f in card.features:
        if not f.nullable:
            users.append(not_null(f.name))
        if f.type is FeatureType.NUMERIC and (f.min is not None or f.max is not None):
            users.append(
                _exp(
                    gxe.ExpectColumnValuesToBeBetween,
                    f"{f.name} is outside its range [{f.min}, {f.max}]",
                    column=f.name,
                    min_value=f.min,
                    max_value=f.max,
                )
            )
        if f.type is FeatureType.CATEGORICAL and f.categories is not None:
            users.append(
                _exp(
                    gxe.ExpectColumnValuesToBeInSet,
                    f"{f.name} is not one of its categories {f.categories}",
                    column=f.name,
                    value_set=list(f.categories),
                )
            )

    events = [
        not_null("user_id"),
        not_null("ts"),
        not_null("text"),
        not_null("source"),  # the set and range checks below skip nulls
        _exp(
            gxe.ExpectColumnValuesToBeInSet,
            f"source is not a sequence source of the card {card.sequence_sources}",
            column="source",
            value_set=card.sequence_sources,
        ),
        _exp(gxe.ExpectColumnValuesToBeBetween, f"ts {ts_why}", column="ts", **ts_range),
        _exp(
            gxe.ExpectColumnValueLengthsToBeBetween,
            f"text is empty or longer than {card.text_max_chars} characters",
            column="text",
            min_value=1,
            max_value=card.text_max_chars,
        ),
    ]
    labels = [
        not_null("user_id"),
        not_null("task"),
        not_null("label"),
        _exp(
            gxe.ExpectColumnValuesToBeInSet,
            f"task is not a task of the card {card.task_names}",
            column="task",
            value_set=card.task_names,
        ),
        _exp(gxe.ExpectColumnValuesToBeInSet, "label must be 0 or 1", column="label", value_set=[0, 1]),
        _exp(
            gxe.ExpectCompoundColumnsToBeUnique,
            "more than one label for the same (user_id, task)",
            column_list=["user_id", "task"],
        ),
    ]
    cutoffs = [
        not_null("user_id"),
        _exp(gxe.ExpectColumnValuesToBeUnique, "user_id has more than one cut-off", column="user_id"),
        not_null("as_of"),
        not_null("n_profile"),
        _exp(gxe.ExpectColumnValuesToBeBetween, f"as_of {ts_why}", column="as_of", **ts_range),
        _exp(gxe.ExpectColumnValuesToBeBetween, "n_profile must be >= 0", column="n_profile", min_value=0),
    ]
    return {Table.USERS: users, Table.EVENTS: events, Table.LABELS: labels, Table.CUTOFFS: cutoffs}


class SuiteRunner:
    """Holds one ephemeral GX context with a validation definition per table."""

    def __init__(self, card: DatasetCard, now: pd.Timestamp):
        gx, _ = gx_modules()
        self.context = quiet_context(gx, "ephemeral")
        source = self.context.data_sources.add_pandas(f"{card.name}-tables")
        self.definitions = {}
        for table, expectations in build_suites(card, now).items():
            suite = self.context.suites.add(gx.ExpectationSuite(name=f"{card.name}.{table.value}"))
            for e in expectations:
                suite.add_expectation(e)
            batch = source.add_dataframe_asset(table.value).add_batch_definition_whole_dataframe("chunk")
            vd = gx.ValidationDefinition(name=f"{card.name}.{table.value}", data=batch, suite=suite)
            self.definitions[table] = self.context.validation_definitions.add(vd)

    def run(self, table: Table, frame: pd.DataFrame) -> list[Failure]:
        """Validate one table's frame (which has a ROW column); return the failed expectations."""
        if frame.empty:
            return []
        result = self.definitions[table].run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ROW]},
        )
        failures = []
        for r in result.results:
            if r.success:
                continue
            cfg = r.expectation_config
            target = cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list", []))
            name = f"{cfg.type}({target})"
            if r.exception_info and r.exception_info.get("raised_exception"):
                msg = r.exception_info.get("exception_message")
                raise RuntimeError(f"expectation {name} on {table.value} could not run: {msg}")
            rows = [int(i[ROW]) for i in r.result.get("unexpected_index_list") or []]
            failures.append(Failure(table, name, cfg.meta["reason"], rows))
        return failures
