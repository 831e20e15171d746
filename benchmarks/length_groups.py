"""Training-step time with the decoder run per group of similar lengths over one padded pass, in one run.

    python benchmarks/length_groups.py                      # the quick profile on MovieLens-100k
    python benchmarks/length_groups.py --steps 4 --overheads none,16,64

A micro-batch's sequences differ in length (a user's block holds up to 64 events; instructions and
answers vary), and a padded pass computes every row up to the longest. `ObjectiveSettings.group_overhead`
splits each pass into groups of similar length (`components.modeling.inputs.length_groups`); `none`
is one padded pass per branch, as before 2026-12-02. Variants run in turns (A B C A B C ...) on the
same micro-batches, each with its own TMoLE model from the same seed; one step = forward + backward +
AdamW step. The table gives each variant's median step, its ratio to `none`, and the decoder
positions it computed per step against the tokens it had to read.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from common import machine, write_result
from tmole_step import step_setup, step_variant, timed_step

from components.ingestion import read_tables
from components.training import load_examples, load_profile

ROOT = Path(__file__).resolve().parents[1]


def parse_overheads(text: str) -> list[int | None]:
    return [None if v.strip() == "none" else int(v) for v in text.split(",")]


def count_positions(model, counter: list[int]) -> None:
    """Adds each decoder call's computed positions (rows x padded length) to `counter[0]`, and the
    call to `counter[1]`."""
    decoder = model.decode

    def counted(embeds, *args, **kw):
        counter[0] += embeds.shape[0] * embeds.shape[1]
        counter[1] += 1
        return decoder(embeds, *args, **kw)

    model.decode = counted


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--data-root", type=Path, default=ROOT / "data", help="folder holding data/<dataset>")
    p.add_argument("--profile", default="quick", help="training profile whose models and settings to use")
    p.add_argument("--cache-dir", type=Path, default=None, help="model cache (default $INSTRUCTUE_CACHE)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up step)")
    p.add_argument("--overheads", default="none,16,64", help="comma-separated; none = one padded pass")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "length_groups.json")
    args = p.parse_args(argv)

    config = load_profile(args.profile)
    data_dir = args.data_root / args.dataset
    if not (data_dir / "manifest.json").is_file():
        raise SystemExit(
            f"{data_dir / 'manifest.json'} is missing: ingest the dataset first (`instructue ingest "
            f"{args.dataset}`), then synthesise its UserQA (`instructue synthesize {args.dataset}`)"
        )
    card, tables = read_tables(data_dir)
    examples = load_examples(data_dir, seed=0)
    batches, profiles, tmole, lora = step_setup(card, tables, examples, config, args.steps + 1)
    overheads = parse_overheads(args.overheads)
    names = ["none" if o is None else f"overhead_{o}" for o in overheads]
    variants, positions, tokens = {}, {}, {}
    for name, overhead in zip(names, overheads, strict=True):
        objective, opt, _ = step_variant(
            "tmole", card, tables, config, profiles, tmole, lora, args.cache_dir, overhead
        )
        positions[name], tokens[name] = [0, 0], []
        count_positions(objective.model, positions[name])
        variants[name] = (objective, opt)

    times: dict[str, list[float]] = {k: [] for k in names}
    computed: dict[str, list[int]] = {k: [] for k in names}
    calls: dict[str, list[int]] = {k: [] for k in names}
    for i, batch in enumerate(batches):
        for name in names:
            before, calls_before = positions[name]
            seconds, n_tokens = timed_step(*variants[name], batch, config)
            if i == 0:  # warm-up: first-call allocations, encoder cache
                continue
            times[name].append(seconds)
            computed[name].append(positions[name][0] - before)
            calls[name].append(positions[name][1] - calls_before)
            tokens[name].append(n_tokens)
        if i:
            print({k: round(v[-1], 2) for k, v in times.items()}, flush=True)

    command = shlex.join(["python", "benchmarks/length_groups.py", *(sys.argv[1:] if argv is None else argv)])
    med = {k: statistics.median(v) for k, v in times.items()}
    base = names[0]
    rows = []
    print()
    head = f"| variant | median step (s) | vs {base} | decoder calls | positions | tokens | padding |"
    print(head + "\n|---|---:|---:|---:|---:|---:|---:|")
    for k in names:
        pos, tok, n = statistics.mean(computed[k]), statistics.mean(tokens[k]), statistics.mean(calls[k])
        rows.append({"variant": k, "median_s": med[k], "ratio": med[k] / med[base], "calls": n,
                     "positions": pos, "tokens": tok, "padding_share": 1 - tok / pos})  # fmt: skip
        ratio, share = med[k] / med[base], 1 - tok / pos
        print(f"| {k} | {med[k]:.2f} | {ratio:.2f}x | {n:.1f} | {pos:,.0f} | {tok:,.0f} | {share:.1%} |")
    report = {
        "benchmark": "length_groups", "machine": machine(), "dataset": args.dataset, "profile": args.profile,
        "command": command,
        "micro_batch": config.micro_batch, "n_embedding": config.n_embedding,
        "n_generative": config.n_generative, "bf16": bool(variants[base][0].model.uses_bf16()),
        "step_s": times, "rows": rows,
    }  # fmt: skip
    write_result(args.out, report)
    return report


if __name__ == "__main__":
    main()
