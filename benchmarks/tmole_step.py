"""Training-step time with TMoLE over plain LoRA of the same rank: same backbone, same batches, one run.

    python benchmarks/tmole_step.py                 # the quick profile's models on MovieLens-100k
    python benchmarks/tmole_step.py --steps 4 --rank 16

Three variants, measured in turns (A B C A B C ...) so machine noise hits them alike:
- `lora`: plain LoRA (rank r on q/k/v/o), one shared pass for both branches (what the trainer does);
- `lora_split`: the same LoRA with the branches in separate passes, as TMoLE needs them;
- `tmole`: N experts of rank r per projection, routed per sample, separate passes.
The ratio tmole / lora_split isolates the cost of the experts and routers; tmole / lora is the whole
cost of switching a run to TMoLE. One step = forward + backward + AdamW step on one micro-batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write_result

from components.ingestion import read_tables
from components.modeling import (
    GROUP_OVERHEAD,
    INSTRUCTION,
    UNIVERSAL,
    LoraSettings,
    build_model,
    build_profiles,
)
from components.training import (
    Objective,
    ObjectiveSettings,
    load_examples,
    load_profile,
    route_names,
    seed_everything,
    task_name,
)

ROOT = Path(__file__).resolve().parents[1]


def step_setup(card, tables, examples, config, n_batches: int, rank: int | None = None):
    """`n_batches` random micro-batches of `config.micro_batch` examples, their users' profiles, and
    the TMoLE settings (task registry from the examples) with plain LoRA of the same rank."""
    rng = np.random.default_rng(0)
    n = config.micro_batch
    batches = [[examples[i] for i in rng.choice(len(examples), n, replace=False)] for _ in range(n_batches)]
    ids = sorted({e.user_id for b in batches for e in b})
    profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))
    registry = [UNIVERSAL, INSTRUCTION, *sorted({task_name(e) for e in examples} - {UNIVERSAL})]
    tmole = config.tmole.model_copy(update={"tasks": registry, "r": rank or config.tmole.r})
    lora = LoraSettings(r=tmole.r, alpha=tmole.alpha, dropout=tmole.dropout)
    return batches, profiles, tmole, lora


def step_variant(
    name: str, card, tables, config, profiles, tmole, lora, cache_dir=None, group_overhead=GROUP_OVERHEAD
):
    """One variant's objective (in train mode), AdamW and trainable parameters, from the same seed:
    `tmole`, `lora` (one shared pass for both branches, as the trainer runs it) or `lora_split`;
    `group_overhead` as `ObjectiveSettings`' (the trainer's default; None: padded passes)."""
    seed_everything(0)
    model = build_model(card, tables.users, config.model, cache_dir)
    model = model.add_tmole(tmole) if name == "tmole" else model.add_lora(lora)
    settings = ObjectiveSettings.from_config(config, share_pass=name == "lora", group_overhead=group_overhead)
    objective = Objective(model, settings, profiles, tables.users).train()
    params = [q for q in objective.parameters() if q.requires_grad]
    return objective, torch.optim.AdamW(params, lr=1e-4), params


def timed_step(objective, opt, batch, config) -> tuple[float, int]:
    """One optimiser step on `batch`, tasks routed as the trainer routes them; returns its seconds
    (a GPU synchronised before and after) and the tokens it read."""
    tasks = route_names(batch, config.generic_instruction_share, np.random.default_rng(1))
    device = objective.model.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = objective(batch[: config.n_embedding], batch[: config.n_generative],
                    tasks[: config.n_embedding], tasks[: config.n_generative])  # fmt: skip
    out.terms.total.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out.tokens


def bare_step(backbone, embeds: torch.Tensor, bf16: bool) -> None:
    """The floor a training step is held against (issue 25): the frozen backbone's forward and
    backward on `embeds`, gradients to the input embeddings only, no adapters, no project code."""
    x = embeds.detach().requires_grad_(True)
    device = x.device.type
    ctx = torch.autocast(device, dtype=torch.bfloat16) if bf16 else torch.autocast(device, enabled=False)
    with ctx:
        out = backbone.base_model(inputs_embeds=x).last_hidden_state
    out.float().pow(2).mean().backward()


def bare_backbone(card, tables, config, cache_dir=None):
    """The profile's backbone as the floor runs it: its frozen weights in bf16 where the model uses
    bf16 (`InstructUE.frozen_weights_to_bf16`, the faster of the two floors), and that precision."""
    from components.modeling import build_model

    floor = build_model(card, tables.users, config.model, cache_dir)
    floor.frozen_weights_to_bf16()
    return floor.backbone, bool(floor.uses_bf16()), floor.device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one warm-up step)")
    p.add_argument("--rank", type=int, default=16)
    args = p.parse_args()

    config = load_profile("quick")
    data_dir = ROOT / "data" / args.dataset
    card, tables = read_tables(data_dir)
    examples = load_examples(data_dir, seed=0)
    n = config.micro_batch
    batches, profiles, tmole, lora = step_setup(card, tables, examples, config, args.steps + 1, args.rank)
    variants = {}
    for name in ("lora", "lora_split", "tmole"):
        objective, opt, params = step_variant(name, card, tables, config, profiles, tmole, lora)
        variants[name] = (objective, opt, sum(q.numel() for q in params))

    def step(name: str, batch) -> float:
        objective, opt, _ = variants[name]
        return timed_step(objective, opt, batch, config)[0]

    times: dict[str, list[float]] = {k: [] for k in variants}
    for name in variants:  # warm-up: first-call allocations, encoder cache
        step(name, batches[0])
    for b in batches[1:]:
        for name in variants:
            times[name].append(step(name, b))
        print({k: round(v[-1], 2) for k, v in times.items()})
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print("| variant | trainable parameters | median step (s) | vs lora | vs lora_split |")
    print("|---|---:|---:|---:|---:|")
    for k in variants:
        print(f"| {k} | {variants[k][2]:,} | {med[k]:.2f} | {med[k] / med['lora']:.2f}x | "
              f"{med[k] / med['lora_split']:.2f}x |")  # fmt: skip
    write_result(
        ROOT / "benchmarks" / "results" / "tmole_step.json",
        {
            "benchmark": "tmole_step", "machine": machine(), "dataset": args.dataset, "rank": args.rank,
            "micro_batch": n, "n_embedding": config.n_embedding, "n_generative": config.n_generative,
            "experts": tmole.n_experts, "bf16": bool(variants["lora"][0].model.uses_bf16()),
            "step_s": times, "median_s": med,
            "ratio_tmole_over_lora": med["tmole"] / med["lora"],
            "ratio_tmole_over_lora_split": med["tmole"] / med["lora_split"],
            "trainable_params": {k: v[2] for k, v in variants.items()},
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
