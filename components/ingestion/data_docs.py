"""Great Expectations Data Docs of a published dataset version: what a reviewer opens in a browser.

    index = build_data_docs(card, Path("data/movielens-100k"), Path("data-docs/movielens-100k"), run_id)

A file-backed GX context is built in a temporary folder: the card's suites (`expectations.py`), one
parquet asset per published table, one Checkpoint over the four validation definitions with an
`UpdateDataDocsAction`. The site then replaces `out` whole, so it always describes the version now
in `data/` (each retrain logs it into its MLflow run, which keeps the history). Ingestion itself
validates chunk by chunk with ephemeral contexts and quarantines failing rows; this is the
reviewer's record of the published result, with every expectation's observed values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from components.common import quiet_logger, replace_dir, temp_sibling
from components.ingestion.card import DatasetCard

SITE = Path("gx/uncommitted/data_docs/local_site")  # where GX's file context writes its default site
INDEX = "index.html"


def build_data_docs(card: DatasetCard, published: Path, out: Path, run_name: str) -> Path:
    """Validate the published tables of `card` in `published/` with a Checkpoint, write its Data Docs
    site (the static HTML only, not the GX project) to `out/`, replaced atomically, and return the
    site's `index.html`.

    Raises:
        RuntimeError: an expectation could not run, or one failed on the published data (ingestion
            quarantines such rows, so this would be a bug worth stopping for).
    """
    import pandas as pd

    from components.ingestion.expectations import build_suites, gx_modules, quiet_context

    gx, _ = gx_modules()
    out = Path(out)
    tmp = temp_sibling(out)
    try:
        context = quiet_context(gx, "file", project_root_dir=str(tmp))
        source = context.data_sources.add_pandas_filesystem("published", base_directory=Path(published))
        definitions = []
        for table, expectations in build_suites(card, pd.Timestamp.now(tz="UTC")).items():
            suite = context.suites.add(gx.ExpectationSuite(name=f"{card.name}.{table.value}"))
            for e in expectations:
                suite.add_expectation(e)
            batch = source.add_parquet_asset(table.value).add_batch_definition_path(
                "published", path=table.filename
            )
            definition = gx.ValidationDefinition(name=f"{card.name}.{table.value}", data=batch, suite=suite)
            definitions.append(context.validation_definitions.add(definition))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{card.name}.published",
                validation_definitions=definitions,
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs")],
                result_format={"result_format": "SUMMARY"},
            )
        )
        with quiet_logger("great_expectations"):  # GX logs a line per rendered page at INFO
            result = checkpoint.run(run_id=gx.RunIdentifier(run_name=run_name))
        replace_dir(tmp / SITE, out)  # the rest of `tmp` (the GX project) goes in `finally`
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not result.success:
        failed = [
            f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column', '')})"
            for v in result.run_results.values()
            for r in v.results
            if not r.success
        ]
        raise RuntimeError(f"the published tables of {card.name} fail {failed}: see {out / INDEX}")
    return out / INDEX
