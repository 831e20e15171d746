"""Sharded jobs' timings in MLflow: one run per `embed-batch` or `synthesize`, a metric per shard.

Metrics `shard_seconds` and `shard_load_seconds` are logged with the shard index as their step (so
MLflow's chart of a metric is the run's shards in order); the run's totals (`shards_computed`,
`users_per_second`, ...) as plain metrics; the job's inputs as params. Runs go to the experiment
`instructue-batch` of the given client's store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from components.common import ShardResult

BATCH_EXPERIMENT = "instructue-batch"
_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def log_sharded_run(
    client,
    artifact_location: str,
    job: str,
    run_name: str,
    params: dict[str, object],
    results: Sequence[ShardResult],
    summary: dict[str, float],
) -> str:
    """Record one sharded run; returns its run id."""
    from mlflow.entities import Metric, Param

    found = client.get_experiment_by_name(BATCH_EXPERIMENT)
    experiment = (
        found.experiment_id
        if found
        else client.create_experiment(BATCH_EXPERIMENT, artifact_location=artifact_location)
    )
    run = client.create_run(experiment, run_name=run_name, tags={"instructue.job": job})
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in summary.items()]
    for r in results:
        if not r.reused:
            metrics.append(Metric("shard_seconds", r.seconds, now, r.index))
            metrics.append(Metric("shard_load_seconds", r.load_seconds, now, r.index))
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    for start in range(0, len(metrics), _BATCH):
        client.log_batch(run.info.run_id, metrics=metrics[start : start + _BATCH])
    client.set_terminated(run.info.run_id)
    return run.info.run_id
