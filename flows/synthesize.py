"""The UserQA synthesis flow: training users of an ingested dataset -> userqa.parquet -> DVC version.

instructue synthesize movielens-100k --writer template
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from components.ingestion import versioning
from components.userqa import SynthesisConfig, SynthesisSummary, make_writer, synthesize
from flows.ingest import version_task
from flows.settings import Paths


@task(name="synthesize-userqa", retries=2, retry_delay_seconds=10)
def synthesize_task(
    folder: Path, writer: str, writer_options: dict[str, Any], config: SynthesisConfig
) -> SynthesisSummary:
    # retries: an endpoint writer can fail transiently; finished chunks are kept, so a retry resumes
    return synthesize(folder, make_writer(writer, **writer_options), config)


@flow(name="synthesize")
def synthesize_flow(
    dataset: str = "movielens-100k",
    writer: str = "template",
    writer_options: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    root: str | None = None,
    version: bool = True,
) -> tuple[SynthesisSummary, versioning.DataVersion | None]:
    paths = Paths.resolve(Path(root) if root else None)
    settings = SynthesisConfig.model_validate(config or {})
    summary = synthesize_task(paths.data / dataset, writer, writer_options or {}, settings)
    return summary, (version_task(paths, False) if version else None)
