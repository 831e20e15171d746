"""The ingestion flow: read -> validate (quarantine) -> publish `data/<name>/` -> version with DVC.

    instructue ingest movielens-100k
    python -m flows.ingest movielens-100k       # the same, without the CLI's formatting

Runs with no Prefect server: the first flow call starts a temporary local one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from components.ingestion import IngestSummary, ingest, read_dataset, versioning
from flows.settings import Paths


@task(name="ingest-and-validate")
def ingest_task(dataset: str, options: dict[str, Any], paths: Paths, max_bad_share: float) -> IngestSummary:
    return ingest(read_dataset(dataset, **options), paths.data, paths.quarantine, max_bad_share=max_bad_share,
                  docs_root=paths.data_docs)  # fmt: skip


@task(name="version-data")
def version_task(paths: Paths, commit: bool) -> versioning.DataVersion:
    versioning.ensure_dvc_repo(paths.root)
    version = versioning.version_data(paths.root, paths.data_dir)
    if commit:
        versioning.commit_pointer(paths.root, f"data: {version}", paths.data_dir)
    return version


@task(name="push-data", retries=2, retry_delay_seconds=5)
def push_task(paths: Paths) -> versioning.Transfer:
    # the default remote may be remote storage: retry transient failures
    return versioning.push(paths.root)


@flow(name="ingest", log_prints=False)
def ingest_flow(
    dataset: str = "movielens-100k",
    options: dict[str, Any] | None = None,
    root: str | None = None,
    max_bad_share: float = 0.05,
    version: bool = True,
    commit: bool = False,
    push: bool = True,
) -> tuple[IngestSummary, versioning.DataVersion | None]:
    """Ingest one dataset into `data/`, then version `data/` with DVC; optionally git-commit the
    new `data.dvc` and push the data to the default DVC remote."""
    paths = Paths.resolve(Path(root) if root else None)
    summary = ingest_task(dataset, options or {}, paths, max_bad_share)
    get_run_logger().info("ingested %s: %s", dataset, summary.rows_kept)
    data_version = version_task(paths, commit) if version else None
    if version and push:
        push_task(paths)
    return summary, data_version


if __name__ == "__main__":
    s, v = ingest_flow(sys.argv[1] if len(sys.argv) > 1 else "movielens-100k")
    print(s.to_text())
    print(v)
