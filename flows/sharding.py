"""Where a sharded flow's shards run: this process (default), a local Dask cluster, or a scheduler.

    runner = ShardRunner.from_options(workers=2)          # or address=..., or $INSTRUCTUE_DASK_ADDRESS
    state = runner.apply(embed_batch_flow)(model=..., return_state=True)

Inside the flow, `map_shards` maps a shard task over the plan on the flow's task runner and shows a
progress bar over shards as they finish. In-process, the shard tasks are called one after the other
in the flow's own thread (no extra thread needed); the model is loaded once either way. On Dask,
each worker process loads the model once (`components.common.worker_cached`) and keeps it for every
shard it runs. A local worker runs one shard at a time with the machine's cores split between the
workers (torch's threads); on a cluster, give each machine one worker and its cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from components.common import Shard, ShardResult

DASK_ADDRESS_ENV = "INSTRUCTUE_DASK_ADDRESS"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ShardRunner(BaseModel):
    """`workers`: start a local Dask cluster of that many processes (cores split between them);
    `address`: use a running
    scheduler (tcp://host:8786). Neither: one process, no Dask."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int | None = Field(None, ge=1)
    address: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ShardRunner:
        if self.workers and self.address:
            raise ValueError("give --workers (a local Dask cluster) or a scheduler address, not both")
        return self

    @classmethod
    def from_options(cls, workers: int | None = None, address: str | None = None) -> ShardRunner:
        """Options first; a scheduler address from the environment applies when neither is given."""
        if workers is None and address is None:
            address = os.environ.get(DASK_ADDRESS_ENV) or None
        return cls(workers=workers, address=address)

    @property
    def description(self) -> str:
        if self.address:
            return f"Dask scheduler {self.address}"
        if self.workers:
            return f"local Dask cluster, {self.workers} worker process(es)"
        return "one process"

    def task_runner(self):
        from prefect.task_runners import ThreadPoolTaskRunner

        if not (self.workers or self.address):
            return ThreadPoolTaskRunner(max_workers=1)
        from prefect_dask import DaskTaskRunner

        _quiet_dask()
        if self.address:
            return DaskTaskRunner(address=self.address)
        # Dask starts workers with one BLAS/OpenMP thread; torch should use the cores a worker is given
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        return DaskTaskRunner(
            cluster_class=_local_cluster,
            cluster_kwargs={
                "omp_threads": threads,
                "n_workers": self.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,  # no web UI to bind on a shared host
            },
        )

    def apply(self, flow_fn):
        return flow_fn.with_options(task_runner=self.task_runner())


def _local_cluster(omp_threads: int, **kwargs):
    """A `LocalCluster` whose workers get `omp_threads` OpenMP/BLAS threads each. Dask's nanny prefers
    the parent's environment over its config and writes its values into the parent's environment,
    so the variables are set around the start (the workers spawn in it) and restored after."""
    import dask
    from distributed import LocalCluster

    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: str(omp_threads) for k in _THREAD_VARS})
    try:
        # Dask's aggressive malloc trimming (MALLOC_TRIM_THRESHOLD_=64 KiB) hands torch's freed
        # activations back to the OS after every batch: shards ran 1.7x slower with it (scale_out.py)
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            return LocalCluster(**kwargs)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _quiet_dask() -> None:
    """Dask logs every worker's start and stop at INFO; a user wants the progress bar and errors.
    The environment variable reaches the worker processes, which read their config from it."""
    import logging

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)


def _one_by_one(task, shards: Sequence[Shard], desc: str, common: dict[str, Any]) -> list[ShardResult]:
    """In-process: each shard task called in the flow's own thread, one after the other; a failed
    shard stops the run with its part missing, so a re-run starts there."""
    results = []
    for shard in tqdm(shards, unit="shard", desc=desc):
        results.append(task(shard=shard, **common))
    return results


def map_shards(task, shards: Sequence[Shard], desc: str, **common: Any) -> list[ShardResult]:
    """Run `task(shard=..., **common)` for every shard on the flow's task runner; results by index.

    A failed shard fails the flow after the others finish; its part is missing, so a re-run
    recomputes it and reuses every part already written."""
    from prefect import unmapped
    from prefect.context import FlowRunContext
    from prefect.futures import as_completed
    from prefect.task_runners import ThreadPoolTaskRunner

    context = FlowRunContext.get()
    if context is None or isinstance(context.task_runner, ThreadPoolTaskRunner):
        return _one_by_one(task, shards, desc, common)
    futures = task.map(shard=list(shards), **{k: unmapped(v) for k, v in common.items()})
    results: list[ShardResult] = []
    errors: list[BaseException] = []
    with tqdm(total=len(futures), unit="shard", desc=desc) as bar:
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except Exception as e:  # noqa: BLE001 - collected and re-raised below
                errors.append(e)
            bar.update(1)
    if errors:
        raise errors[0]
    return sorted(results, key=lambda r: r.index)
