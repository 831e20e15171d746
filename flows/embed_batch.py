"""The batch-embedding flow: a registry version over a dataset's users, shard by shard.

    instructue embed-batch --model instructue-movielens-100k --dataset movielens-100k -i "..."
    instructue embed-batch ... --workers 2                    # a local Dask cluster of 2 processes
    INSTRUCTUE_DASK_ADDRESS=tcp://scheduler:8786 instructue embed-batch ...   # an existing cluster

The version is pinned by number before the first shard; the shards' parts land under
`<out>.parts/<key>/` and become `<out>` when all are written (the same file one process writes).
A re-run with the same inputs skips the parts already written, or the whole job when `<out>` is
finished. Per-shard timings go to MLflow (experiment `instructue-batch`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, task

from components.common import Shard, ShardResult, shard_summary
from components.registry import (
    DEFAULT_SHARD_USERS,
    EmbedJob,
    RegistrySettings,
    RegistrySource,
    embed_shard,
    finish_embedding,
    plan_embedding,
)
from flows.settings import Paths
from flows.sharding import map_shards
from flows.tracking import log_sharded_run


@dataclass(frozen=True)
class EmbedBatchResult:
    rows: int
    source: RegistrySource
    summary: dict[str, float]
    skipped: bool = False  # `out` already held exactly this job's output
    shards: tuple[ShardResult, ...] = ()
    map_started_at: float = 0.0  # epoch seconds: when the first shard was handed to the runner

    def to_text(self) -> str:
        s = self.summary
        where = f"from {self.source.name} version {self.source.version}"
        if self.skipped:
            return f"{self.rows:,} embeddings {where} already complete; nothing to do"
        return (
            f"{self.rows:,} embeddings {where}: {int(s['shards_computed'])} shard(s) computed, "
            f"{int(s['shards_reused'])} reused, on {int(s['workers'])} worker(s), "
            f"{s['users_per_second']:.1f} users/s"
        )


@task(name="embed-shard", retries=1, retry_delay_seconds=5)
def embed_shard_task(job: EmbedJob, shard: Shard, folder: str) -> ShardResult:
    # a retry recomputes only this shard: its part is written atomically or not at all
    return embed_shard(job, shard, folder)


@flow(name="embed-batch")
def embed_batch_flow(
    model: str,
    dataset: str,
    instructions: list[str | None],
    out: str,
    split: str = "all",
    batch_size: int | None = None,
    shard_users: int = DEFAULT_SHARD_USERS,
    root: str | None = None,
) -> EmbedBatchResult:
    paths = Paths.resolve(Path(root) if root else None)
    settings = RegistrySettings.load(paths.root)
    client = settings.client(paths.root)
    source = RegistrySource.pin(client, model, settings.tracking(paths.root), settings.registry(paths.root))
    job = EmbedJob(source, str(paths.data / dataset), tuple(instructions), split, batch_size, shard_users)
    start = time.perf_counter()
    plan, store, finished = plan_embedding(job, Path(out))
    if finished:
        return EmbedBatchResult(len(plan.user_ids) * len(job.instructions), source, {}, skipped=True)
    planned, map_started_at = time.perf_counter(), time.time()
    results = map_shards(embed_shard_task, plan.shards, "embed-batch", job=job, folder=str(store.folder))
    mapped = time.perf_counter()
    rows = finish_embedding(job, plan, store, Path(out))
    end = time.perf_counter()
    # where the wall time went: the overhead per shard is map time not spent in the shards' own work
    summary = shard_summary(results, end - start) | {
        "plan_seconds": planned - start, "map_seconds": mapped - planned, "finish_seconds": end - mapped,
    }  # fmt: skip
    log_sharded_run(
        client, settings.artifacts(paths.root), "embed-batch",
        f"embed-batch {source.name} v{source.version} {dataset}",
        {"model": f"{source.name}/{source.version}", "dataset": dataset, "split": split,
         "instructions": len(instructions), "shard_users": shard_users, "key": plan.key},
        results, summary,
    )  # fmt: skip
    return EmbedBatchResult(rows, source, summary, shards=tuple(results), map_started_at=map_started_at)
