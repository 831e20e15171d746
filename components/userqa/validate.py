"""Validation of `userqa.parquet` with a Great Expectations suite, like the contract's tables.

Synthesised records that break it point at a bug, not at bad input, so the run stops with every
failed expectation named instead of quarantining rows.
"""

from __future__ import annotations

import os

import pandas as pd

from components.ingestion import ContractError


def validate_userqa(df: pd.DataFrame, train_users: set[int], families: dict) -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if df.empty:
        raise ContractError("UserQA synthesis produced no records")
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        ctx.data_sources.add_pandas("userqa")
        .add_dataframe_asset("records")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name="userqa"))
    for e in (
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToBeInSet(column="user_id", value_set=sorted(train_users)),
        gxe.ExpectColumnValuesToBeInSet(column="family", value_set=sorted(families)),
        gxe.ExpectColumnValuesToNotBeNull(column="answer"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=1, max_value=4000),
        gxe.ExpectColumnValuesToBeInSet(column="window", value_set=["profile", "future"]),
        gxe.ExpectColumnValuesToBeInSet(column="passed", value_set=[True, False]),
    ):
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="userqa", data=batch, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df})
    failed = [r.expectation_config.type + f"({r.expectation_config.kwargs.get('column')})"
              for r in result.results if not r.success]  # fmt: skip
    general = df["family"] == "general"
    if df.loc[general, "instruction"].notna().any() or df.loc[~general, "instruction"].isna().any():
        failed.append("instruction is null exactly for the general family")
    if failed:
        raise ContractError(f"userqa.parquet failed validation: {failed}")
