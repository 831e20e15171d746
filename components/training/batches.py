"""What each optimizer step trains on: uniform sampling, or S2Sched's scheduled task mix.

Both planners draw one global batch per step (the same on every process) and hand each process
its micro-batches. A micro-batch is an embedding-branch list and a generative-branch list of
examples plus each example's TMoLE route name.

- `UniformPlanner` (the ablation "uniform sampling"): one seeded permutation of all records per
  epoch; the embedding examples are the first `n_embedding` of a draw, the generative ones the first
  `n_generative`, so without TMoLE one pass serves both branches.
- `ScheduledPlanner` (RecFound 4.3): a fixed validation sample per task is held out; every
  `eval_every` steps each task's validation loss of each branch is recorded in `S2Sched`, and each
  branch's batch is composed by its ratios (floor of B * w, largest remainder) from per-task pools
  drawn without replacement within each pool's epoch.

A share `generic_instruction_share` of instructed examples is routed to the generic `instruction`
task instead of their family, so that the route used at inference for a free-form instruction is
trained too; the draw is seeded by (seed, step), so a resumed run routes exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from components.modeling import INSTRUCTION
from components.training.data import Example, Sampler, shard, task_name
from components.training.s2sched import S2SchedConfig, TaskPools, build_scheduler

EMBEDDING, GENERATIVE = "embedding", "generative"


@dataclass
class MicroBatch:
    emb: list[Example]
    gen: list[Example]
    emb_tasks: list[str] = field(default_factory=list)
    gen_tasks: list[str] = field(default_factory=list)


def route_names(examples: list[Example], generic_share: float, rng: np.random.Generator) -> list[str]:
    """Each example's route: its task, or (a share of instructed ones) the generic instruction task."""
    draws = rng.random(len(examples))
    return [
        INSTRUCTION if e.instruction is not None and u < generic_share else task_name(e)
        for e, u in zip(examples, draws, strict=True)
    ]


class UniformPlanner:
    def __init__(self, examples: list[Example], n_emb: int, n_gen: int, accum: int, seed: int,
                 generic_share: float):  # fmt: skip
        self.examples, self.n_emb, self.n_gen, self.accum = examples, n_emb, n_gen, accum
        self.seed, self.generic_share = seed, generic_share
        self.sampler = Sampler(len(examples), seed)

    def plan(self, step: int, world: int, rank: int) -> list[MicroBatch]:
        micro = max(self.n_emb, self.n_gen)
        draws = shard(self.sampler.take(micro * self.accum * world), micro, self.accum, world, rank)
        rng = np.random.default_rng([self.seed, step, 1])
        out = []
        for idx in draws:
            records = [self.examples[i] for i in idx]
            tasks = route_names(records, self.generic_share, rng)
            out.append(MicroBatch(records[: self.n_emb], records[: self.n_gen],
                                  tasks[: self.n_emb], tasks[: self.n_gen]))  # fmt: skip
        return out

    @property
    def epoch(self) -> float:
        return self.sampler.position

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])


class ScheduledPlanner:
    """S2Sched over the UserQA tasks of both branches; see the module docstring."""

    def __init__(self, examples: list[Example], n_emb: int, n_gen: int, accum: int, seed: int,
                 generic_share: float, config: S2SchedConfig, total_steps: int,
                 task_batches: int | None = None):  # fmt: skip
        self.examples, self.n_emb, self.n_gen, self.accum = examples, n_emb, n_gen, accum
        self.task_batches = task_batches
        self.seed, self.generic_share, self.config, self.total_steps = (
            seed,
            generic_share,
            config,
            total_steps,
        )
        by_task: dict[str, list[int]] = {}
        for i, e in enumerate(examples):
            by_task.setdefault(task_name(e), []).append(i)
        rng = np.random.default_rng([seed, 7])
        self.validation: dict[str, list[Example]] = {}
        pools: dict[str, list[int]] = {}
        for task in sorted(by_task):
            idx = rng.permutation(by_task[task]).tolist()
            k = min(config.val_per_task, len(idx) // 2)  # never more than half a task's records
            self.validation[task] = [examples[i] for i in idx[:k]]
            pools[task] = sorted(idx[k:])
        self.tasks = sorted(pools)
        self.pools = TaskPools(pools, seed)
        self.branches = [b for b, n in ((EMBEDDING, n_emb), (GENERATIVE, n_gen)) if n]
        self.scheduler = build_scheduler({b: self.tasks for b in self.branches}, config)
        self.updates = 0

    def due(self, step: int) -> bool:
        """A validation record is due before step 0 (the reference) and every `eval_every` steps."""
        return step % self.config.eval_every == 0

    def record(
        self, step: int, losses: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Record each branch's per-task validation losses; returns the loggable snapshot."""
        out = {}
        for branch, per_task in losses.items():
            self.scheduler.record(branch, step, per_task, self.total_steps)
            out[branch] = self.scheduler.snapshot(branch)
        self.updates += 1
        return out

    def plan(self, step: int, world: int, rank: int) -> list[MicroBatch]:
        rng = np.random.default_rng([self.seed, step, 2])
        draws = {}
        for branch, per in ((EMBEDDING, self.n_emb), (GENERATIVE, self.n_gen)):
            if not per:
                draws[branch] = [[] for _ in range(self.accum)]
                continue
            total = per * self.accum * world
            if branch == EMBEDDING and self.task_batches:
                # a few tasks per step, kept together: negatives within a task differ by user only
                composed = self.pools.compose(self.task_counts(total, step))
            else:
                composed = self.pools.compose(self.scheduler.counts(branch, total))
                composed = rng.permutation(composed).tolist()  # every micro-batch gets a share of each task
            draws[branch] = shard(composed, per, self.accum, world, rank)
        out = []
        for emb_idx, gen_idx in zip(draws[EMBEDDING], draws[GENERATIVE], strict=True):
            emb = [self.examples[i] for i in emb_idx]
            gen = [self.examples[i] for i in gen_idx]
            out.append(MicroBatch(emb, gen, route_names(emb, self.generic_share, rng),
                                  route_names(gen, self.generic_share, rng)))  # fmt: skip
        return out

    def task_counts(self, total: int, step: int) -> dict[str, int]:
        """The embedding batch of `task_batches` tasks: drawn without replacement with probabilities
        S2Sched's current ratios (a task with a larger ratio is drawn more often; drawing k without
        replacement evens the shares out a little), the `total`
        examples split evenly between them (`allocate`), seeded by (seed, step)."""
        from components.training.s2sched import allocate

        snap = self.scheduler.snapshot(EMBEDDING)
        w = np.array([snap[t]["ratio"] for t in self.tasks], float)
        k = min(self.task_batches, len(self.tasks))
        rng = np.random.default_rng([self.seed, step, 3])
        chosen = sorted(rng.choice(len(self.tasks), k, replace=False, p=w / w.sum()).tolist())
        counts = allocate(total, np.ones(k))
        return {self.tasks[c]: int(n) for c, n in zip(chosen, counts, strict=True)}

    @property
    def epoch(self) -> float:
        """Mean over tasks of epochs done in each task's pool."""
        pos = self.pools.state_dict()["tasks"].values()
        return float(np.mean([p["epoch"] + p["cursor"] / p["n"] for p in pos]))

    def state_dict(self) -> dict:
        return {
            "s2sched": self.scheduler.state_dict(),
            "pools": self.pools.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["s2sched"])
        self.pools.load_state_dict(state["pools"])
        self.updates = int(state["updates"])
