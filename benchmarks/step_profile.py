"""Where a quick-profile training step spends its time: `torch.profiler` over a few steps (issue 25).

    python benchmarks/step_profile.py                    # TMoLE (as the quick profile) and LoRA
    python benchmarks/step_profile.py --steps 3 --set model.bf16=false --tag fp32

Each variant (`tmole`: the profile's TMoLE experts, branches in separate passes; `lora`: plain LoRA of
the same rank with its one shared pass) runs one untimed warm-up step, then `--steps` profiled steps
(forward + backward + AdamW on the same micro-batches, `tmole_step.timed_step`). Beside them the
bare backbone: the same token count through the frozen backbone's forward and backward with
gradients to the input embeddings only, no adapters, no experts, no project code: the floor a step
could reach.

Self CPU time of every operator is summed into groups: matmul, attention, elementwise+norm, copies
and casts, optimizer, encoder (the sentence encoder's forward, by record_function), and Python and
dispatcher (the wall time no operator accounts for). Prints the groups and the top operators per
variant and writes JSON to `benchmarks/results/step_profile[_<tag>].json`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from common import machine, write_result
from tmole_step import bare_backbone, bare_step, step_setup, step_variant, timed_step
from torch.profiler import ProfilerActivity, profile

from components.ingestion import read_tables
from components.training import load_examples, load_profile

ROOT = Path(__file__).resolve().parents[1]

GROUPS = {  # operator name fragments -> group; first match wins
    "dropout": ("bernoulli", "dropout", "native_dropout"),
    "matmul": ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm"),
    "attention": ("attention", "sdpa", "flash", "softmax"),
    "copies and casts": ("copy_", "to", "_to_copy", "clone", "contiguous", "cat", "index", "gather",
                         "scatter", "where", "pad", "stack", "repeat", "expand", "empty", "zeros",
                         "fill_", "narrow", "slice", "select", "view", "reshape", "transpose", "permute",
                         "masked_fill", "embedding", "unbind", "split", "chunk", "t", "as_strided"),
    "optimizer": ("adam", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt"),
}  # fmt: skip


def group_of(name: str) -> str:
    op = name.split("::")[-1].lower()
    for group, keys in GROUPS.items():
        if any(op == k or op.startswith(k + "_") or (len(k) > 3 and k in op) for k in keys):
            return group
    return "elementwise+norm"


def summarise(prof, wall_s: float, steps: int) -> dict:
    """Self CPU seconds per group and the top operators, per step."""
    per_op: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if evt.key.startswith("ProfilerStep") or evt.key in ("step",):
            continue
        per_op[evt.key] += evt.self_cpu_time_total / 1e6
    groups: dict[str, float] = defaultdict(float)
    for name, s in per_op.items():
        groups[group_of(name)] += s
    accounted = sum(groups.values())
    # profiled operator time can exceed wall time with intra-op threads; Python is what is left over
    groups["Python and dispatcher"] = max(0.0, wall_s - accounted)
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:15]
    return {
        "wall_s_per_step": wall_s / steps,
        "groups_s_per_step": {k: v / steps for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_ops_s_per_step": {k: v / steps for k, v in top},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--profile", default="quick")
    p.add_argument("--steps", type=int, default=2, help="profiled steps per variant (after a warm-up)")
    p.add_argument("--variants", nargs="+", default=["tmole", "lora"], choices=["tmole", "lora"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tag", default="")
    args = p.parse_args()

    config = load_profile(args.profile, overrides=args.overrides)
    data_dir = ROOT / "data" / args.dataset
    card, tables = read_tables(data_dir)
    examples = load_examples(data_dir, seed=0)
    batches, profiles, tmole, lora = step_setup(card, tables, examples, config, args.steps + 1)
    report: dict = {"benchmark": "step_profile", "machine": machine(), "dataset": args.dataset,
                    "command": shlex.join(["python", *sys.argv]), "profile": args.profile,
                    "overrides": args.overrides, "steps": args.steps, "variants": {}}  # fmt: skip
    tokens_per_step = {}
    for name in args.variants:
        objective, opt, _ = step_variant(name, card, tables, config, profiles, tmole, lora)
        _, tokens = timed_step(objective, opt, batches[0], config)  # warm-up
        report["bf16"] = bf16 = bool(objective.model.uses_bf16())
        wall = 0.0
        n_tokens = 0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches[1:]:
                s, t = timed_step(objective, opt, b, config)
                wall += s
                n_tokens += t
        summary = summarise(prof, wall, args.steps)
        summary["tokens_per_step"] = n_tokens / args.steps
        summary["tokens_per_s"] = n_tokens / wall
        # the same step again unprofiled: the profiler's own overhead inflates the wall above
        t0 = time.perf_counter()
        for b in batches[1:]:
            timed_step(objective, opt, b, config)
        summary["unprofiled_s_per_step"] = (time.perf_counter() - t0) / args.steps
        report["variants"][name] = summary
        tokens_per_step[name] = n_tokens / args.steps
        del objective, opt

    # the bare backbone on the same token count: rows of 160 positions, as many as the step read
    rows = max(1, round(max(tokens_per_step.values()) / 160))
    bare, _, _ = bare_backbone(card, tables, config)
    embeds = torch.randn(rows, 160, bare.config.hidden_size) * 0.05
    bare_step(bare, embeds, bf16)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            bare_step(bare, embeds, bf16)
    wall = time.perf_counter() - t0
    summary = summarise(prof, wall, args.steps)
    summary["tokens_per_step"] = rows * 160
    summary["tokens_per_s"] = rows * 160 * args.steps / wall
    report["variants"]["bare_backbone"] = summary

    names = list(report["variants"])
    groups = sorted({g for v in report["variants"].values() for g in v["groups_s_per_step"]})
    print(f"\nseconds per step (self CPU time by group), bf16={bf16}")
    print("| group | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for g in groups:
        cells = [f"{report['variants'][n]['groups_s_per_step'].get(g, 0.0):.2f}" for n in names]
        print(f"| {g} | " + " | ".join(cells) + " |")
    rows_out = (("wall_s_per_step", "wall (profiled)"), ("unprofiled_s_per_step", "wall (unprofiled)"),
                ("tokens_per_step", "tokens"), ("tokens_per_s", "tokens/s"))  # fmt: skip
    for key, label in rows_out:
        print(f"| {label} | " + " | ".join(f"{report['variants'][n].get(key, 0):.2f}" for n in names) + " |")
    for n in names:
        print(f"\ntop operators, {n}:")
        for op, s in report["variants"][n]["top_ops_s_per_step"].items():
            print(f"  {s:7.3f} s  {op}")
    suffix = f"_{args.tag}" if args.tag else ""
    write_result(ROOT / "benchmarks" / "results" / f"step_profile{suffix}.json", report)
    np.random.seed(0)


if __name__ == "__main__":
    main()
