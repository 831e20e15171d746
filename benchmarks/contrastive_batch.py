"""Can the model learn InfoNCE at all? Memorise one batch of one task, with and without centring.

    python benchmarks/contrastive_batch.py                          # quick profile, 8 users, 20 steps
    python benchmarks/contrastive_batch.py --steps 30 --batch 16 --set lr=3e-3

A sanity check for the embedding branch (InstructUE Eq. 2-4): B examples of one UserQA task, each
with its own user and a different answer, are trained on again and again (the profile's adapters
and optimiser settings, dropout off, only the embedding branch). Each step records the batch's
InfoNCE and top-1: the share of users whose own answer is the most similar of the B answers. A
model that cannot memorise eight pairs cannot learn them from the data either.

It runs twice from the same initial weights: `raw` scores cosines of the backbone's states as they
are, `centred` scores them after subtracting the batch's mean (`centre=true`,
`losses.centre_groups`). Before the first step it reports how alike the states are: the mean pairwise
cosine among the users' `<USER>` states and among the answers' last states. Prints a table, writes
`benchmarks/results/contrastive_batch_<dataset>_<profile>.json` and a plot of top-1 over the steps.
On the quick profile a step takes 4-8 s on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine, save_figure, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODES = {"raw": False, "centred": True}


def pick_batch(examples: list, size: int, seed: int) -> tuple[str, list]:
    """`size` examples of the task with the most distinct answers: distinct users, distinct answers."""
    from components.training import task_name

    by: dict[str, list] = {}
    for e in examples:
        if e.instruction is not None:
            by.setdefault(task_name(e), []).append(e)
    task = max(sorted(by), key=lambda t: len({e.answer for e in by[t]}))
    pool = by[task][:]
    random.Random(seed).shuffle(pool)
    batch, answers, users = [], set(), set()
    for e in pool:
        if e.answer not in answers and e.user_id not in users:
            batch.append(e)
            answers.add(e.answer)
            users.add(e.user_id)
        if len(batch) == size:
            return task, batch
    raise SystemExit(f"task {task} has only {len(batch)} users with distinct answers; lower --batch")


def similarity_stats(objective, batch: list, task: str, centre: bool) -> dict[str, float]:
    """Mean pairwise cosines of users and of answers (raw states), top-1 under the mode's scoring."""
    from components.modeling import Branch
    from components.training import centre_groups

    m = objective.model
    with torch.no_grad():
        route = m.route([task] * len(batch), Branch.EMBEDDING)
        rows, answer_rows = objective._user_rows(batch, 0), objective._answer_rows([e.answer for e in batch])
        hidden, answer_hidden = objective._decode([(rows, route), (answer_rows, route)])
        users = objective.pool_users(hidden, rows.mask, rows.user_pos)
        answers = objective._last_states(answer_hidden, answer_rows)
    off = ~torch.eye(len(batch), dtype=torch.bool)
    raw_u, raw_a = F.normalize(users, dim=-1), F.normalize(answers, dim=-1)
    if centre:
        users, answers = centre_groups(users), centre_groups(answers)
    u, a = F.normalize(users, dim=-1), F.normalize(answers, dim=-1)
    top1 = ((u @ a.T).argmax(1) == torch.arange(len(batch))).float().mean()
    return {
        "user_cos": round(float((raw_u @ raw_u.T)[off].mean()), 4),
        "answer_cos": round(float((raw_a @ raw_a.T)[off].mean()), 4),
        "top1": round(float(top1), 4),
    }


def run_mode(config, card, tables, batch: list, task: str, centre: bool, steps: int, seed: int) -> dict:
    from components.modeling import INSTRUCTION, UNIVERSAL, build_model, build_profiles
    from components.training import Objective, ObjectiveSettings, Tuner

    torch.manual_seed(seed)
    model = build_model(card, tables.users, config.model)
    if config.tuner is Tuner.TMOLE:
        model.add_tmole(config.tmole.model_copy(update={"tasks": [UNIVERSAL, INSTRUCTION, task]}))
    else:
        model.add_lora(config.lora)
    ids = sorted({e.user_id for e in batch})
    profiles = dict(zip(ids, build_profiles(card, tables, ids, config.model.max_events), strict=True))
    settings = ObjectiveSettings.from_config(config, n_embedding=len(batch), n_generative=0, centre=centre,
                                             in_task_negatives=False, alpha_rec=0.0)  # fmt: skip
    objective = Objective(model, settings, profiles, tables.users).eval()  # dropout off, gradients on
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    names = [task] * len(batch)
    start = similarity_stats(objective, batch, task, centre)
    history = []
    for step in range(steps):
        t0 = time.perf_counter()
        out = objective(batch, [], names, None)
        out.terms.total.backward()
        if config.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        after = similarity_stats(objective, batch, task, centre)
        history.append({"step": step + 1, "info_nce": round(float(out.terms.cl.detach()), 4),
                        "top1": after["top1"], "s": round(time.perf_counter() - t0, 1)})  # fmt: skip
        mode = "centred" if centre else "raw"
        loss = history[-1]["info_nce"]
        print(f"  {mode:8s} step {step + 1:3d}  InfoNCE {loss:.3f}  top-1 {after['top1']:.2f}", flush=True)
    return {
        "start": start,
        "history": history,
        "final_top1": history[-1]["top1"] if history else start["top1"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a profile override")
    ap.add_argument("--dataset", default="movielens-100k")
    ap.add_argument("--data", help="the dataset folder (default data/<dataset>)")
    ap.add_argument("--batch", type=int, default=8, help="examples (users) in the batch")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", help="JSON path (default benchmarks/results/contrastive_batch_<dataset>_<profile>.json)"
    )
    args = ap.parse_args(argv)
    if args.batch < 2 or args.steps < 1:
        raise SystemExit("--batch must be >= 2 and --steps >= 1")

    from components.ingestion import read_tables
    from components.training import load_examples, load_profile

    config = load_profile(args.profile, args.set)
    data_dir = ROOT / "data" / args.dataset if args.data is None else Path(args.data)
    card, tables = read_tables(data_dir)
    task, batch = pick_batch(load_examples(data_dir, config.families), args.batch, args.seed)
    print(f"task {task}, {len(batch)} users, {args.steps} steps, lr {config.lr}", flush=True)
    modes = {
        name: run_mode(config, card, tables, batch, task, centre, args.steps, args.seed)
        for name, centre in MODES.items()
    }
    print(
        f"\n| mode | user cos | answer cos | top-1 before | top-1 after {args.steps} | InfoNCE first / last |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, r in modes.items():
        h, s0 = r["history"], r["start"]
        print(f"| {name} | {s0['user_cos']:.3f} | {s0['answer_cos']:.3f} | {s0['top1']:.2f} | "
              f"{r['final_top1']:.2f} | {h[0]['info_nce']:.3f} / {h[-1]['info_nce']:.3f} |")  # fmt: skip

    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"contrastive_batch_{args.dataset}_{Path(args.profile).stem}.json"
    )
    report = {
        "machine": machine(),
        "command": "python benchmarks/contrastive_batch.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "profile": args.profile, "overrides": args.set, "task": task, "batch": len(batch),
        "users": [e.user_id for e in batch], "steps": args.steps, "modes": modes,
    }  # fmt: skip
    write_result(out, report)
    plot(modes, len(batch), out.with_suffix(".png"), f"{args.dataset}, {args.profile}: one batch of {task}")
    return 0


def plot(modes: dict, batch: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, r in modes.items():
        steps = [0] + [h["step"] for h in r["history"]]
        ax.plot(steps, [r["start"]["top1"]] + [h["top1"] for h in r["history"]], "o-", label=name)
    ax.axhline(1.0 / batch, color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="step", ylabel="top-1 (own answer most similar)", title=title, ylim=(0, 1.05))
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
