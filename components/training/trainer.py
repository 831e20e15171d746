"""The training loop: setup -> (resume) -> steps -> checkpoints -> final model folder.

    result = train(load_profile("tiny"), data_dir=Path("data/movielens-100k"), run_dir=Path("runs/x"))

One process, or several under `torchrun` / `accelerate launch` (gloo on CPUs, NCCL on GPUs; DDP or
FSDP from the launch config in `infra/training/`): accelerate wraps the objective and averages the
gradients; every process draws the same global batch from the sampler and trains on its own slice.
AdamW, linear warm-up then cosine decay, gradient accumulation and clipping; bf16 autocast where it
measures faster (see `InstructUE.autocast`, `modeling/precision.py`).

A run folder holds `checkpoints/step-<n>/` (see `checkpoint.py`) and, at the end, `model/` (a model
folder `instructue embed --model` loads) and `result.json` (steps, wall time, rates, final losses);
`initial/` keeps the untrained starting point (same seed, LoRA at zero) for merging and comparisons.
`resume=True` continues from the newest complete checkpoint with the weights, optimizer, scheduler,
RNG and sampler position it saved, so the run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.training.config import Scheduling, TrainConfig, Tuner
from components.training.param_groups import param_groups
from components.training.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)

MODEL_DIR = "model"
RESULT_FILE = "result.json"
INITIAL_DIR = "initial"  # the trainable state before the first step (a model folder)


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    resumed_from: int | None
    wall_s: float
    examples_per_s: float
    tokens_per_s: float
    final: dict[str, float] = field(default_factory=dict)  # mean losses over the last log window
    run_id: str | None = None
    s2sched_s: float = 0.0  # wall time of S2Sched's validation passes (in wall_s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["run_dir"], d["model_dir"] = str(self.run_dir), str(self.model_dir)
        return d


def warmup_cosine(total: int, warmup: int, floor: float = 0.0):
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to `floor` at `total`."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Window:
    """Running sums of the logged quantities between two log steps."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n = 0
        self.tokens = self.examples = 0
        self.t0 = time.perf_counter()

    def add(self, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.n) for k, v in self.sums.items()}


@dataclass
class _Run:
    """What one training run holds between its phases (setup, resume, steps, finish)."""

    config: TrainConfig
    run_dir: Path
    accelerator: Any
    tracker: Tracker
    card: Any = None
    examples: list = field(default_factory=list)
    model: Any = None
    objective: Any = None
    optimizer: Any = None
    scheduler: Any = None
    planner: Any = None
    params: list = field(default_factory=list)
    step: int = 0
    resumed_from: int | None = None
    run_id: str | None = None
    sched_s: float = 0.0  # wall time of S2Sched's validation passes
    alignment: Any = None  # the alignment stage's `AlignmentResult` when it ran
    last: dict = field(default_factory=dict)
    totals: dict = field(default_factory=lambda: {"tokens": 0, "examples": 0, "t0": 0.0})

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def train(
    config: TrainConfig,
    data_dir: Path,
    run_dir: Path,
    *,
    cache_dir: Path | None = None,
    tracker: Tracker | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train an InstructUE model on a dataset's UserQA records; see the module docstring.

    Raises:
        MissingUserQA: the dataset has not been synthesised.
        ValueError: `resume` found a checkpoint of a different configuration or world size.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from components.modeling import pick_device

    accelerator = Accelerator(
        cpu=pick_device(config.model.device).type == "cpu",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    tracker = tracker if (tracker is not None and accelerator.is_main_process) else NullTracker()
    run = _Run(config, Path(run_dir), accelerator, tracker)
    user_ids = _setup(run, Path(data_dir), cache_dir, progress)
    _resume_or_start(run, resume)
    accelerator.wait_for_everyone()
    run.objective, run.optimizer = accelerator.prepare(run.objective, run.optimizer)
    run.run_id = tracker.start(
        run.run_id,
        run_name=f"{run.card.name}-{config.profile}",
        tags={"dataset": run.card.name, "profile": config.profile, "world_size": str(run.world)},
    )
    params = {"config": config.model_dump(mode="json"), "n_examples": len(run.examples),
              "n_users": len(user_ids), "world_size": run.world, "data_dir": Path(data_dir).name}  # fmt: skip
    tracker.log_params(params)
    _log_alignment(run)
    _steps(run, progress)
    return _finish(run)


def _log_alignment(run: _Run) -> None:
    got = run.alignment
    if got is None:
        return
    run.tracker.log_metrics({"align_s": got.seconds, "align_cached": float(got.cached)}, 0)
    for i, loss in enumerate(got.losses):
        if i % 10 == 0 or i == len(got.losses) - 1:
            run.tracker.log_metrics({"align_loss": loss}, i)


def _setup(run: _Run, data_dir: Path, cache_dir: Path | None, progress: bool = False) -> list[int]:
    """Data, model (aligned first when `config.alignment.steps`), objective, optimizer, schedule and
    sampler; returns the training users."""
    from components.ingestion import read_tables
    from components.modeling import build_model, build_profiles
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings

    config = run.config
    seed_everything(config.seed)  # the same initial weights on every process
    run.card, tables = read_tables(data_dir)
    run.examples = load_examples(data_dir, config.families, config.max_records, config.seed)
    base = build_model(run.card, tables.users, config.model, cache_dir).to(run.accelerator.device)
    user_ids = sorted({e.user_id for e in run.examples})
    profiles = dict(
        zip(user_ids, build_profiles(run.card, tables, user_ids, config.model.max_events), strict=True)
    )
    if config.alignment.steps:
        from components.modeling import default_cache_dir
        from components.training.alignment import align_cached

        run.alignment = align_cached(base, list(profiles.values()), config.alignment,
                                     cache_dir or default_cache_dir(), progress and run.main)  # fmt: skip
        log.info(run.alignment.summary())
    run.model = add_tuner(base, config, run.examples)
    run.objective = Objective(run.model, ObjectiveSettings.from_config(config), profiles, tables.users)
    groups = param_groups(run.objective.named_parameters(), config.groups, config.lr, config.weight_decay)
    run.params = [p for g in groups for p in g["params"]]
    run.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(config.warmup_ratio * config.steps)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, warmup_cosine(config.steps, warmup, config.min_lr_ratio)
    )
    run.planner = _planner(config, run.examples)
    return user_ids


def _resume_or_start(run: _Run, resume: bool) -> None:
    """Restore the newest complete checkpoint (`resume`), or start clean: the initial state saved."""
    from components.modeling import save_model
    from components.training import checkpoint as ckpt

    config_json = run.config.model_dump(mode="json")
    found = ckpt.latest_checkpoint(run.run_dir) if resume else None
    if found is not None:
        restored = ckpt.read_checkpoint(found, run.model, run.rank)
        _check_same_config(restored.trainer["config"], config_json, found)
        if restored.trainer["world"] != run.world:
            raise ValueError(f"{found} was written by {restored.trainer['world']} processes, this run has "
                             f"{run.world}: resume with the same number of processes")  # fmt: skip
        run.optimizer.load_state_dict(restored.optimizer)
        run.scheduler.load_state_dict(restored.trainer["scheduler"])
        run.planner.load_state_dict(restored.trainer["planner"])
        run.step = run.resumed_from = int(restored.trainer["step"])
        run.run_id = restored.trainer.get("run_id")
        log.info("resuming from %s (step %d)", found, run.step)
        return
    seed_everything(run.config.seed + 1000 * run.rank)  # dropout differs across processes, not runs
    if run.main:
        if ckpt.complete_checkpoints(run.run_dir):
            shutil.rmtree(run.run_dir / ckpt.CHECKPOINTS)  # a fresh run does not mix with an old one
        save_model(run.model, run.run_dir / INITIAL_DIR)  # the step-0 state: merging measures from it


def _steps(run: _Run, progress: bool) -> None:
    """The optimisation steps, with S2Sched's validation passes, logging and checkpoints."""
    from tqdm.auto import tqdm

    config, accelerator = run.config, run.accelerator
    bar = tqdm(
        total=config.steps, initial=run.step, desc="train", unit="step", disable=not (progress and run.main)
    )
    window, status = Window(), "FAILED"
    run.totals["t0"] = time.perf_counter()  # throughput counts the steps, not the model's setup
    try:
        while run.step < config.steps:
            _s2sched_pass(run)
            window = _one_step(run, window)
            bar.update(1)
            if run.step % config.log_every == 0 or run.step == config.steps:
                metrics = _reduce(accelerator, window)
                metrics["lr"] = run.scheduler.get_last_lr()[0]
                metrics["epoch"] = run.planner.epoch
                run.tracker.log_metrics(metrics, run.step)
                bar.set_postfix(
                    {k: f"{metrics[k]:.3f}" for k in ("loss", "loss_lm", "loss_cl") if k in metrics}
                )
                run.totals["tokens"] += metrics["tokens"]
                run.totals["examples"] += metrics["examples"]
                run.last, window = metrics, Window()
            if run.step % config.checkpoint_every == 0 or run.step == config.steps:
                _checkpoint(run)
        status = "FINISHED"
    finally:
        bar.close()
        if status != "FINISHED":
            run.tracker.finish("FAILED")


def _s2sched_pass(run: _Run) -> None:
    from components.training.batches import ScheduledPlanner
    from components.training.objective import task_losses

    planner = run.planner
    if isinstance(planner, ScheduledPlanner) and planner.due(run.step):
        t0 = time.perf_counter()
        losses = task_losses(
            run.accelerator.unwrap_model(run.objective), planner.validation, planner.branches
        )
        snapshot = planner.record(run.step, losses)
        run.sched_s += time.perf_counter() - t0
        run.tracker.log_metrics(_flatten_snapshot(snapshot, run.sched_s), run.step)


def _one_step(run: _Run, window: Window) -> Window:
    """One optimizer step over this process's micro-batches (gradient accumulation, clipping)."""
    config, accelerator, objective = run.config, run.accelerator, run.objective
    objective.train()
    draws = run.planner.plan(run.step, run.world, run.rank)
    step_losses: dict[str, float] = {}
    for k, mb in enumerate(draws):
        sync = k == len(draws) - 1
        with accelerator.no_sync(objective) if not sync else contextlib.nullcontext():
            out = objective(mb.emb, mb.gen, mb.emb_tasks, mb.gen_tasks)
            accelerator.backward(out.terms.total / config.grad_accum)
        for name, v in out.terms.detached().items():
            step_losses[name] = step_losses.get(name, 0.0) + v / config.grad_accum
        window.tokens += out.tokens
        window.examples += out.examples
    grad_norm = (
        accelerator.clip_grad_norm_(run.params, config.clip) if config.clip is not None else torch.tensor(0.0)
    )
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    window.add({**step_losses, "grad_norm": float(grad_norm)})
    return window


def _checkpoint(run: _Run) -> None:
    from components.training import checkpoint as ckpt

    trainer_state = {
        "step": run.step, "world": run.world, "config": run.config.model_dump(mode="json"),
        "run_id": run.run_id, "planner": run.planner.state_dict(), "scheduler": run.scheduler.state_dict(),
        "host_rng": ckpt.host_rng(),
    }  # fmt: skip
    _save_checkpoint(
        run.accelerator, run.run_dir, run.step, run.model, run.optimizer, trainer_state, run.config
    )


def _finish(run: _Run) -> TrainResult:
    """The final model folder, the result file and the run's throughput metrics."""
    from components.common import write_text
    from components.modeling import save_model

    model_dir = run.run_dir / MODEL_DIR
    if run.main:
        save_model(run.accelerator.unwrap_model(run.objective).model, model_dir)
        run.tracker.log_artifact(model_dir / "model.json", "model")
    run.accelerator.wait_for_everyone()
    wall = time.perf_counter() - run.totals["t0"]
    trained = run.step > (run.resumed_from or 0)
    result = TrainResult(
        run_dir=run.run_dir, model_dir=model_dir, steps=run.step, resumed_from=run.resumed_from, wall_s=wall,
        examples_per_s=run.totals["examples"] / wall if wall else 0.0,
        tokens_per_s=run.totals["tokens"] / wall if wall else 0.0,
        final={k: v for k, v in (run.last if trained else {}).items() if k.startswith("loss")},
        run_id=run.run_id or None, s2sched_s=run.sched_s,
    )  # fmt: skip
    if run.main:
        write_text(run.run_dir / RESULT_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
        totals = {"run_examples_per_s": result.examples_per_s, "run_s2sched_s": run.sched_s,
                  "run_tokens_per_s": result.tokens_per_s, "run_wall_s": wall}  # fmt: skip
        run.tracker.log_metrics(totals, run.step)
        run.tracker.finish("FINISHED")
    return result


def add_tuner(model, config: TrainConfig, examples):
    """The backbone tuner `config.tuner` names ("adapter" means `SourceAdapter` only): TMoLE with one
    task per UserQA family of `examples` (plus the universal and free-instruction routes), or LoRA."""
    from components.modeling import INSTRUCTION, UNIVERSAL
    from components.training.data import task_name

    if config.tuner is Tuner.TMOLE:
        registry = [UNIVERSAL, INSTRUCTION, *sorted({task_name(e) for e in examples} - {UNIVERSAL})]
        return model.add_tmole(config.tmole.model_copy(update={"tasks": registry}))
    return model.add_lora(config.lora)


def _planner(config: TrainConfig, examples):
    from components.training.batches import ScheduledPlanner, UniformPlanner

    common = (examples, config.n_embedding, config.n_generative, config.grad_accum, config.seed,
              config.generic_instruction_share)  # fmt: skip
    if config.scheduling is Scheduling.S2SCHED:
        return ScheduledPlanner(*common, config.s2sched, config.steps, config.task_batches)
    return UniformPlanner(*common)


def _flatten_snapshot(snapshot: dict, sched_s: float) -> dict[str, float]:
    """S2Sched's state as MLflow metrics: s2sched/<branch>/<task>/<val_loss|slope|ratio>."""
    out = {"s2sched_eval_s": sched_s}
    for branch, tasks in snapshot.items():
        for task, values in tasks.items():
            for key, value in values.items():
                out[f"s2sched/{branch}/{task}/{key}"] = float(value)
    return out


def _reduce(accelerator, window: Window) -> dict[str, float]:
    """Window means averaged over processes; token and example counts summed, rates per second."""
    means = window.means()
    keys = sorted(means)
    elapsed = max(1e-9, time.perf_counter() - window.t0)
    local = torch.tensor([means[k] for k in keys] + [window.tokens, window.examples], dtype=torch.float64)
    if accelerator.num_processes > 1:
        local = accelerator.reduce(local.to(accelerator.device), reduction="sum").cpu()
        local[: len(keys)] /= accelerator.num_processes
    out = {k: float(v) for k, v in zip(keys, local[: len(keys)], strict=True)}
    out["tokens"], out["examples"] = float(local[-2]), float(local[-1])
    out["tokens_per_s"], out["examples_per_s"] = out["tokens"] / elapsed, out["examples"] / elapsed
    return out


def _save_checkpoint(accelerator, run_dir, step, model, optimizer, trainer_state, config) -> None:
    """Every process writes its RNG into the staging folder; rank 0 writes the rest and renames."""
    from components.training import checkpoint as ckpt

    staging = ckpt.staging_dir(run_dir, step)
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.write_rank_rng(staging, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.write_checkpoint(staging, ckpt.step_dir(run_dir, step), model, optimizer.state_dict(),
                              trainer_state)  # fmt: skip
        ckpt.prune(run_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()


# sections that do not touch the trained weights: checkpoints written before `merge` left TrainConfig
# (components/run_config.py) still carry it
AFTER_TRAINING = frozenset({"merge"})


def _check_same_config(saved: dict, current: dict, where: Path) -> None:
    keys = (set(saved) | set(current)) - AFTER_TRAINING
    diff = sorted(k for k in keys if saved.get(k) != current.get(k))
    if diff:
        raise ValueError(f"{where} was trained with a different configuration ({', '.join(diff)} differ): "
                         "resume with the same profile and overrides, or start a fresh run")  # fmt: skip
