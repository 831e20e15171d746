"""TIES merge of a quick run against its final model and its best single checkpoint: what the
validation probe chooses, and what the probe users (the held-out test) say about that choice.

    python benchmarks/merge_quick.py --run-dir runs/quick-tmole-s2sched --density 0.2 0.5 1.0

For each candidate (the run's last checkpoints, the final model, one merge per density) every labelled
user is embedded once, universal and under each task's manual instruction. The validation score is
`components.evaluation.validation` on the training users (3 seeds, what `instructue merge` uses to
choose); the test score is the same probe on the probe users (5 seeds), which the choice never sees.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, write_result

from components.evaluation import probe_variants, validation_users
from components.ingestion import read_tables
from components.merging import FINAL, MERGED, Order, candidates, choose, merge_run
from components.modeling import UserEmbedder, load_model
from components.training import complete_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--last", type=int, default=2)
    p.add_argument("--density", type=float, nargs="+", default=[0.2])
    p.add_argument("--order", default="trim_first")
    args = p.parse_args()
    card, tables = read_tables(ROOT / "data" / args.dataset)
    val_users = validation_users(tables)
    test_users = tables.users.loc[tables.users["split"] == "probe", "user_id"].astype(int).tolist()
    users = val_users + test_users
    instructions = [None, *(card.task(t.name).instruction for t in card.tasks)]
    chosen = complete_checkpoints(args.run_dir)[-args.last :]
    folders = dict(candidates(args.run_dir, chosen))
    tmp = Path(tempfile.mkdtemp(prefix="merge-quick-"))
    truncation = {}
    for d in args.density:
        name = f"{MERGED}@{d:g}"
        folders[name] = tmp / name
        t0 = time.perf_counter()
        report = merge_run(args.run_dir, chosen, folders[name], d, Order(args.order))
        truncation[name] = {"max_truncation_error": report.max_truncation_error,
                            "merge_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    rows = {}
    for name, folder in folders.items():
        t0 = time.perf_counter()
        vectors = UserEmbedder(load_model(folder), card, tables).embed_many(
            users, instructions, progress=True
        )
        n = len(val_users)
        val = probe_variants(
            card, tables.labels, val_users, {k: v[:n] for k, v in vectors.items()}, (0, 1, 2)
        )
        test = probe_variants(
            card, tables.labels, test_users, {k: v[n:] for k, v in vectors.items()}, range(5)
        )
        rows[name] = {"validation": (val[0] + val[1]) / 2, "validation_universal": val[0],
                      "validation_manual": val[1], "test": (test[0] + test[1]) / 2,
                      "test_universal": test[0], "test_manual": test[1],
                      "seconds": round(time.perf_counter() - t0, 1), **truncation.get(name, {})}  # fmt: skip
        print(name, {k: round(v, 4) for k, v in rows[name].items()}, flush=True)
    decisions = {}
    singles = {k: r["validation"] for k, r in rows.items() if not k.startswith(MERGED)}
    for d in args.density:
        name = f"{MERGED}@{d:g}"
        winner, best = choose({**singles, MERGED: rows[name]["validation"]})
        decisions[name] = {"winner": name if winner == MERGED else winner, "best_single": best}
    print(f"\n{len(val_users)} validation (training) users, {len(test_users)} test (probe) users; "
          "score = mean of universal and manual-instruction mean AUC over the card's tasks\n")  # fmt: skip
    print("| candidate | validation score | test score | test universal | test manual | truncation |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        trunc = f"{r['max_truncation_error']:.1%}" if "max_truncation_error" in r else ""
        print(f"| {name} | {r['validation']:.4f} | {r['test']:.4f} | {r['test_universal']:.4f} | "
              f"{r['test_manual']:.4f} | {trunc} |")  # fmt: skip
    for name, dec in decisions.items():
        w = dec["winner"]
        print(
            f"with {name}: validation picks {w} (test {rows[w]['test']:.4f}; final {rows[FINAL]['test']:.4f})"
        )
    report = {"benchmark": "merge_quick", "machine": machine(), "run": args.run_dir.name,
              "checkpoints": [c.name for c in chosen], "order": args.order, "results": rows,
              "decisions": decisions}  # fmt: skip
    write_result(ROOT / "benchmarks" / "results" / f"merge_quick_{args.run_dir.name}.json", report)


if __name__ == "__main__":
    main()
