"""Does torch.compile (inductor) pay for the quick profile's training step on this host? (issue 25)

    python benchmarks/compile_step.py [--steps 8]

Two TMoLE objectives of the quick profile from the same seed: one eager, one whose decoder layers are
compiled in place (`nn.Module.compile(dynamic=True)`, so the step's varying lengths do not recompile).
Each takes a warm-up step (the compiled one's includes compilation), then they alternate on the same
micro-batches. Prints a table and appends to `benchmarks/results/compile_step.json`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import machine, write_result
from tmole_step import step_setup, step_variant, timed_step

from components.ingestion import read_tables
from components.training import load_examples, load_profile

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "compile_step.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant after the warm-up")
    args = p.parse_args()
    data_dir = ROOT / "data" / args.dataset
    config = load_profile("quick")
    card, tables = read_tables(data_dir)
    examples = load_examples(data_dir, config.families, config.max_records, config.seed)
    batches, profiles, tmole, lora = step_setup(card, tables, examples, config, args.steps + 1)
    variants = {}
    for name in ("eager", "compiled"):
        objective, opt, _ = step_variant("tmole", card, tables, config, profiles, tmole, lora)
        if name == "compiled":
            for layer in objective.model.backbone.base_model.layers:
                layer.compile(dynamic=True)
        variants[name] = (objective, opt)
    first, times = {}, {name: [] for name in variants}
    for name, (objective, opt) in variants.items():
        t0 = time.perf_counter()
        timed_step(objective, opt, batches[0], config)
        first[name] = time.perf_counter() - t0
    for batch in batches[1:]:
        for name, (objective, opt) in variants.items():
            times[name].append(timed_step(objective, opt, batch, config)[0])
    med = {name: float(np.median(t)) for name, t in times.items()}
    saved = med["eager"] - med["compiled"]
    breakeven = (first["compiled"] - first["eager"]) / saved if saved > 0 else None
    print("| variant | first step s | median step s |\n|---|---:|---:|")
    for name in variants:
        print(f"| {name} | {first[name]:.2f} | {med[name]:.3f} |")
    print(f"compiled / eager step time {med['compiled'] / med['eager']:.3f}; the compilation pays back "
          f"after {breakeven:.0f} steps" if breakeven else "compilation never pays back here")  # fmt: skip
    report = {"benchmark": "compile_step", "machine": machine(), "layers": config.model.layers,
              "micro_batch": config.micro_batch, "first_step_s": first, "step_s": times,
              "median_s": med, "compiled_over_eager": med["compiled"] / med["eager"],
              "breakeven_steps": breakeven}  # fmt: skip
    write_result(OUT, report)


if __name__ == "__main__":
    main()
