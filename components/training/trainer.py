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

import numpy as np
import torch

from components.training.config import Adapter, Scheduling, TrainConfig
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
    from tqdm.auto import tqdm

    from components.ingestion.contract import read_tables
    from components.modeling.factory import build_model, pick_device, save_model
    from components.modeling.profile import build_profiles
    from components.training import checkpoint as ckpt
    from components.training.batches import ScheduledPlanner
    from components.training.data import load_examples
    from components.training.objective import Objective, ObjectiveSettings, task_losses

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    accelerator = Accelerator(
        cpu=pick_device(config.model.device).type == "cpu",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    tracker = tracker if (tracker is not None and main) else NullTracker()

    # -- setup: data, model, objective, optimizer ---------------------------------------------------
    seed_everything(config.seed)  # the same initial weights on every process
    card, tables = read_tables(data_dir)
    examples = load_examples(data_dir, config.families, config.max_records, config.seed)
    model = add_adapter(build_model(card, tables.users, config.model, cache_dir).to(accelerator.device),
                        config, examples)  # fmt: skip
    user_ids = sorted({e.user_id for e in examples})
    profiles = dict(
        zip(user_ids, build_profiles(card, tables, user_ids, config.model.max_events), strict=True)
    )
    settings = ObjectiveSettings(
        n_embedding=config.n_embedding, n_generative=config.n_generative, temperature=config.temperature,
        margin=config.margin, same_side=config.same_side, alpha_lm=config.alpha_lm,
        alpha_cl=config.alpha_cl, alpha_rec=config.alpha_rec, max_answer_tokens=config.max_answer_tokens,
        in_task_negatives=config.task_batches is not None, centre=config.centre,
    )  # fmt: skip
    objective = Objective(model, settings, profiles, tables.users)
    groups = param_groups(objective.named_parameters(), config.groups, config.lr, config.weight_decay)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(config.warmup_ratio * config.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.steps, warmup, config.min_lr_ratio)
    )
    planner = _planner(config, examples)

    step, resumed_from, run_id = 0, None, None
    config_json = config.model_dump(mode="json")
    found = ckpt.latest_checkpoint(run_dir) if resume else None
    if found is not None:
        restored = ckpt.read_checkpoint(found, model, rank)
        _check_same_config(restored.trainer["config"], config_json, found)
        if restored.trainer["world"] != world:
            raise ValueError(f"{found} was written by {restored.trainer['world']} processes, this run has "
                             f"{world}: resume with the same number of processes")  # fmt: skip
        optimizer.load_state_dict(restored.optimizer)
        scheduler.load_state_dict(restored.trainer["scheduler"])
        planner.load_state_dict(restored.trainer["planner"])
        step = resumed_from = int(restored.trainer["step"])
        run_id = restored.trainer.get("run_id")
        log.info("resuming from %s (step %d)", found, step)
    else:
        seed_everything(config.seed + 1000 * rank)  # dropout differs across processes, not runs
        if main:
            if ckpt.complete_checkpoints(run_dir):
                shutil.rmtree(run_dir / ckpt.CHECKPOINTS)  # a fresh run does not mix with an old one
            save_model(model, run_dir / INITIAL_DIR)  # the step-0 state: merging measures from it
    accelerator.wait_for_everyone()

    objective, optimizer = accelerator.prepare(objective, optimizer)
    run_id = tracker.start(
        run_id,
        run_name=f"{card.name}-{config.profile}",
        tags={"dataset": card.name, "profile": config.profile, "world_size": str(world)},
    )
    tracker.log_params({"config": config_json, "n_examples": len(examples), "n_users": len(user_ids),
                        "world_size": world, "data_dir": data_dir.name})  # fmt: skip

    # -- steps ----------------------------------------------------------------------------------------
    sched_s = 0.0  # wall time of S2Sched's validation passes
    bar = tqdm(total=config.steps, initial=step, desc="train", unit="step", disable=not (progress and main))
    window, totals = Window(), {"tokens": 0, "examples": 0, "t0": time.perf_counter()}
    status, last = "FAILED", {}
    try:
        while step < config.steps:
            if isinstance(planner, ScheduledPlanner) and planner.due(step):
                t0 = time.perf_counter()
                unwrapped = accelerator.unwrap_model(objective)
                losses = task_losses(unwrapped, planner.validation, planner.branches)
                snapshot = planner.record(step, losses)
                sched_s += time.perf_counter() - t0
                tracker.log_metrics(_flatten_snapshot(snapshot, sched_s), step)
            objective.train()
            draws = planner.plan(step, world, rank)
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
                accelerator.clip_grad_norm_(params, config.clip)
                if config.clip is not None
                else torch.tensor(0.0)
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.add({**step_losses, "grad_norm": float(grad_norm)})
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                metrics = _reduce(accelerator, window)
                metrics["lr"] = scheduler.get_last_lr()[0]
                metrics["epoch"] = planner.epoch
                tracker.log_metrics(metrics, step)
                bar.set_postfix(
                    {k: f"{metrics[k]:.3f}" for k in ("loss", "loss_lm", "loss_cl") if k in metrics}
                )
                totals["tokens"] += metrics["tokens"]
                totals["examples"] += metrics["examples"]
                last = metrics
                window = Window()
            if step % config.checkpoint_every == 0 or step == config.steps:
                trainer_state = {
                    "step": step, "world": world, "config": config_json, "run_id": run_id,
                    "planner": planner.state_dict(), "scheduler": scheduler.state_dict(),
                    "host_rng": ckpt.host_rng(),
                }  # fmt: skip
                _save_checkpoint(accelerator, run_dir, step, model, optimizer, trainer_state, config)
        status = "FINISHED"
    finally:
        bar.close()
        if status != "FINISHED":
            tracker.finish("FAILED")

    model_dir = run_dir / MODEL_DIR
    if main:
        save_model(accelerator.unwrap_model(objective).model, model_dir)
        tracker.log_artifact(model_dir / "model.json", "model")
    accelerator.wait_for_everyone()
    wall = time.perf_counter() - totals["t0"]
    result = TrainResult(
        run_dir=run_dir, model_dir=model_dir, steps=step, resumed_from=resumed_from, wall_s=wall,
        examples_per_s=totals["examples"] / wall if wall else 0.0,
        tokens_per_s=totals["tokens"] / wall if wall else 0.0,
        final={k: v for k, v in (last if step > (resumed_from or 0) else {}).items()
               if k.startswith("loss")},
        run_id=run_id or None, s2sched_s=sched_s,
    )  # fmt: skip
    if main:
        from components.common.atomic import write_text

        write_text(run_dir / RESULT_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
        tracker.log_metrics({"run_examples_per_s": result.examples_per_s, "run_s2sched_s": sched_s,
                             "run_tokens_per_s": result.tokens_per_s, "run_wall_s": wall}, step)  # fmt: skip
        tracker.finish("FINISHED")
    return result


def add_adapter(model, config: TrainConfig, examples):
    """The trainable adapter `config.adapter` names: TMoLE with one task per UserQA family of
    `examples` (plus the universal and free-instruction routes), or LoRA."""
    from components.modeling.tmole import INSTRUCTION, UNIVERSAL
    from components.training.data import task_name

    if config.adapter is Adapter.TMOLE:
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


AFTER_TRAINING = frozenset({"merge"})  # config sections that do not touch the trained weights


def _check_same_config(saved: dict, current: dict, where: Path) -> None:
    keys = (set(saved) | set(current)) - AFTER_TRAINING
    diff = sorted(k for k in keys if saved.get(k) != current.get(k))
    if diff:
        raise ValueError(f"{where} was trained with a different configuration ({', '.join(diff)} differ): "
                         "resume with the same profile and overrides, or start a fresh run")  # fmt: skip
