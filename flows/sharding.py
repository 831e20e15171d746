"""Where a sharded flow's shards run: this process (default), a local Dask cluster, or a scheduler.

    runner = ShardRunner.from_options(workers=2)          # or address=..., or $INSTRUCTUE_DASK_ADDRESS
    state = runner.apply(embed_batch_flow)(model=..., return_state=True)

Inside the flow, `map_shards` maps a shard task over the plan on the flow's task runner and shows a
progress bar over shards as they finish. In-process means one worker thread: shards run one after
the other in this process, as fast as the plain loop (the model is loaded once either way). On Dask,
each worker process loads the model once (`components.common.worker_cached`) and keeps it for every
shard it runs; a worker gets one thread, since torch already uses the cores a worker is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from components.common import Shard, ShardResult

DASK_ADDRESS_ENV = "INSTRUCTUE_DASK_ADDRESS"


class ShardRunner(BaseModel):
    """`workers`: start a local Dask cluster of that many processes; `address`: use a running
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

        if self.address:
            return DaskTaskRunner(address=self.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": self.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,  # no web UI to bind on a shared host
            }
        )

    def apply(self, flow_fn):
        return flow_fn.with_options(task_runner=self.task_runner())


def map_shards(task, shards: Sequence[Shard], desc: str, **common: Any) -> list[ShardResult]:
    """Run `task(shard=..., **common)` for every shard on the flow's task runner; results by index.

    A failed shard fails the flow after the others finish; its part is missing, so a re-run
    recomputes it and reuses every part already written."""
    from prefect import unmapped
    from prefect.futures import as_completed

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
