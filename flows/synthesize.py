"""The UserQA synthesis flow: training users of an ingested dataset -> userqa.parquet -> DVC version.

    instructue synthesize movielens-100k --writer template
    instructue synthesize movielens-100k --writer endpoint -o base_url=... --workers 4   # on Dask

Users are answered in chunks (`chunk_users`), each chunk a shard task on the flow's task runner
(one process by default; see `flows/sharding.py`). Each worker builds its answer writer once. A
re-run with the same inputs reuses every chunk already written. Per-chunk timings go to MLflow
(experiment `instructue-batch`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from components.common import Shard, ShardResult, shard_summary, worker_cached
from components.ingestion import versioning
from components.training import TrackingSettings, tracking_client
from components.userqa import (
    SynthesisConfig,
    SynthesisPlan,
    SynthesisSummary,
    finish_synthesis,
    make_writer,
    plan_synthesis,
    synthesize_shard,
)
from flows.ingest import version_task
from flows.settings import Paths
from flows.sharding import map_shards
from flows.tracking import log_sharded_run


def _writer(writer: str, options: dict[str, Any]):
    """One writer per process (a local LLM loads once per worker, not per chunk)."""
    key = ("userqa-writer", writer, json.dumps(options, sort_keys=True, default=str))
    return worker_cached(key, lambda: make_writer(writer, **options))[0]


@task(name="synthesize-chunk", retries=2, retry_delay_seconds=10)
def synthesize_shard_task(
    plan: SynthesisPlan, shard: Shard, writer: str, writer_options: dict[str, Any]
) -> ShardResult:
    # retries: an endpoint writer can fail transiently; a retry redoes only this chunk
    return synthesize_shard(plan, shard, _writer(writer, writer_options))


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
    options = writer_options or {}
    start = time.perf_counter()
    answer_writer = _writer(writer, options)
    plan, summary = plan_synthesis(paths.data / dataset, answer_writer, settings)
    if summary is None:
        results = map_shards(
            synthesize_shard_task, plan.shards.shards, f"userqa {dataset}",
            plan=plan, writer=writer, writer_options=options,
        )  # fmt: skip
        summary = finish_synthesis(plan, answer_writer, results, time.perf_counter() - start)
        tracking = TrackingSettings.load(paths.root)
        log_sharded_run(
            tracking_client(paths.root), tracking.artifacts(paths.root), "synthesize",
            f"synthesize {dataset} ({writer})",
            {"dataset": dataset, "writer": writer, "chunk_users": settings.chunk_users, "key": plan.key},
            results, shard_summary(results, summary.seconds),
        )  # fmt: skip
    return summary, (version_task(paths, False) if version else None)
