"""The `quick` training profile on MovieLens-100k: training figures, then trained versus untrained
embeddings probed on the card's six tasks (logistic regression, 50/50 split, 5 seeds, probe users).

    instructue train --profile quick --dataset movielens-100k      # writes runs/movielens-100k-quick/
    python benchmarks/train_quick.py                               # probes it against the untrained model
    python benchmarks/train_quick.py --train                       # trains first (same code, no Prefect)
    python benchmarks/train_quick.py --run-dir runs/quick-tmole --set scheduling=uniform --tag tmole

The untrained model is the trained run's starting point (`<run>/initial/`; for older runs the same
seed rebuilds the same adapters and token rows, with LoRA at zero). Both are probed on universal
embeddings (no instruction) and on embeddings under each task's manual instruction from the card.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import PeakRss, machine, write_result

from components.evaluation import format_table, mean_auc, probe_embeddings
from components.ingestion import read_tables
from components.modeling import UserEmbedder, build_model, load_model
from components.training import (
    INITIAL_DIR,
    RESULT_FILE,
    STATE_FILE,
    TrainConfig,
    latest_checkpoint,
    load_profile,
    seed_everything,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
SEEDS = tuple(range(5))  # this benchmark's recorded protocol: 5 splits, a fixed C


def training_figures(run_dir: Path) -> dict:
    """result.json of the run, or (runs that predate it) the MLflow run its last checkpoint names."""
    if (run_dir / RESULT_FILE).is_file():
        return json.loads((run_dir / RESULT_FILE).read_text())
    found = latest_checkpoint(run_dir)
    if found is None:
        raise SystemExit(f"{run_dir} holds no finished run; train it first (see the module docstring)")
    state = json.loads((found / STATE_FILE).read_text())
    from mlflow.tracking import MlflowClient

    from components.training import TrackingSettings

    client = MlflowClient(TrackingSettings.load(ROOT).uri(ROOT))
    data = client.get_run(state["run_id"]).data.metrics
    return {
        "steps": state["step"], "run_id": state["run_id"], "wall_s": data.get("run_wall_s"),
        "examples_per_s": data.get("run_examples_per_s"), "tokens_per_s": data.get("run_tokens_per_s"),
        "final": {k: data[k] for k in ("loss", "loss_lm", "loss_cl") if k in data},
    }  # fmt: skip


def probe_model(model, card, tables, probe_ids: list[int], C: float) -> dict[str, list]:
    embedder = UserEmbedder(model, card, tables)
    tasks = [t.name for t in card.tasks]
    instructions = [None, *(card.task(t).instruction for t in tasks)]
    t0 = time.perf_counter()
    vectors = embedder.embed_many(probe_ids, instructions, progress=True)
    seconds = time.perf_counter() - t0
    labels = tables.labels
    universal = probe_embeddings(
        dict(zip(probe_ids, vectors[None], strict=True)), labels, tasks, probe_ids, C=C, seeds=SEEDS
    )
    manual = []
    for t in tasks:
        by_user = dict(zip(probe_ids, vectors[card.task(t).instruction], strict=True))
        manual += probe_embeddings(by_user, labels, [t], probe_ids, C=C, seeds=SEEDS)
    return {"universal": universal, "manual": manual, "embed_s": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/<dataset>-quick")
    p.add_argument("--train", action="store_true", help="train the quick profile first")
    p.add_argument("--tag", default="", help="suffix of the results file (train_quick_<tag>.json)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="profile override key=value")
    args = p.parse_args()
    run_dir = args.run_dir or ROOT / "runs" / f"{args.dataset}-quick"
    data_dir = ROOT / "data" / args.dataset
    config: TrainConfig = load_profile("quick", args.overrides)
    if args.train:
        with PeakRss() as rss:
            train(config, data_dir, run_dir)
        print(f"training peak RSS {rss.peak / 2**30:.2f} GiB")
    figures = training_figures(run_dir)

    card, tables = read_tables(data_dir)
    probe_ids = tables.users.loc[tables.users["split"] == "probe", "user_id"].astype(int).tolist()
    if (run_dir / INITIAL_DIR).is_dir():  # the run's own starting point
        untrained = load_model(run_dir / INITIAL_DIR)
    else:  # runs that predate initial/: the same seed builds the same fresh weights, adapters at zero
        seed_everything(config.seed)
        untrained = build_model(card, tables.users, config.model).add_lora(config.lora).eval()
    results = {"untrained": probe_model(untrained, card, tables, probe_ids, args.C)}
    del untrained
    trained = load_model(run_dir / "model")
    results["trained"] = probe_model(trained, card, tables, probe_ids, args.C)

    rows = []
    for variant in ("universal", "manual"):
        for name in ("untrained", "trained"):
            scores = results[name][variant]
            print(format_table(scores, title=f"{name} model, {variant} embeddings"))
            print()
            rows.append({"model": name, "variant": variant, "mean_auc": mean_auc(scores),
                         "tasks": [s.to_dict() for s in scores]})  # fmt: skip
    summary = {r["model"] + "/" + r["variant"]: round(r["mean_auc"], 4) for r in rows}
    print("| model | universal mean AUC | manual-instruction mean AUC |")
    print("|---|---|---|")
    for name in ("untrained", "trained"):
        print(f"| {name} | {summary[name + '/universal']:.4f} | {summary[name + '/manual']:.4f} |")
    print()
    print(f"training: {figures['steps']} steps, {figures['wall_s']:.0f} s wall, "
          f"{figures['tokens_per_s']:.0f} tokens/s, {figures['examples_per_s']:.2f} examples/s, "
          f"final losses {figures['final']}")  # fmt: skip
    name = "train_quick" + (f"_{args.tag}" if args.tag else "") + ("" if args.C == 1.0 else f"_C{args.C:g}")
    write_result(
        ROOT / "benchmarks" / "results" / f"{name}.json",
        {
            "benchmark": "train_quick", "machine": machine(), "dataset": args.dataset,
            "profile": config.model_dump(mode="json"), "training": figures, "probe_users": len(probe_ids),
            "probe": {"seeds": len(SEEDS), "fit_fraction": 0.5, "C": args.C,
                      "classifier": "standardised logistic regression"},
            "summary": summary, "results": rows,
            "embed_s": {k: round(v["embed_s"], 1) for k, v in results.items()},
            "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
