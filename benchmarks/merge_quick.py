"""TIES-merged checkpoints of a quick run against its final and its earlier checkpoint, probed.

    instructue merge --run runs/quick-tmole-s2sched            # writes <run>/merged
    python benchmarks/merge_quick.py --run-dir runs/quick-tmole-s2sched

Each model's embeddings of the 377 probe users are probed on the card's six tasks (logistic
regression, 50/50, 5 seeds), universal and under each task's manual instruction, as in
`train_quick.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import machine, write_result
from train_quick import ROOT, probe_model

from components.evaluation.probe import mean_auc
from components.ingestion import read_tables
from components.modeling.factory import load_model
from components.training.checkpoint import complete_checkpoints


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--run-dir", type=Path, required=True)
    args = p.parse_args()
    card, tables = read_tables(ROOT / "data" / args.dataset)
    probe_ids = tables.users.loc[tables.users["split"] == "probe", "user_id"].astype(int).tolist()
    candidates = {c.name: c for c in complete_checkpoints(args.run_dir)}
    candidates["merged"] = args.run_dir / "merged"
    rows = {}
    for name, folder in candidates.items():
        res = probe_model(load_model(folder), card, tables, probe_ids, 1.0)
        rows[name] = {"universal": mean_auc(res["universal"]), "manual": mean_auc(res["manual"])}
        print(name, rows[name])
    print("| model | universal mean AUC | manual-instruction mean AUC |")
    print("|---|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['universal']:.4f} | {r['manual']:.4f} |")
    report = {"benchmark": "merge_quick", "machine": machine(), "run": args.run_dir.name, "results": rows}
    write_result(ROOT / "benchmarks" / "results" / f"merge_quick_{args.run_dir.name}.json", report)


if __name__ == "__main__":
    main()
