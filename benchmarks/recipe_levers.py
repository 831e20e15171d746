"""Quality-recipe levers on the validation (training) users only (issue 26): no probe user is read.

    python benchmarks/recipe_levers.py untrained                         # untrained variants + baselines
    python benchmarks/recipe_levers.py train --tag lit --set model.layers=8 --set model.answer_encoder=true

`untrained`: the sentence-encoder, SVD, tabular and raw-backbone baselines and untrained model variants
(default; 8 layers; summary tokens + normalised adapters + soft tokens at the rows' RMS, at 30, 8 and
4 layers), each probed universal and under the manual instructions on the 566 labelled training users
(`evaluation.validation`, 3 seeds). `train`: the quick profile with `--set` overrides trained with the
real trainer (no tracking), then its final model probed the same way. Each result is appended to
`benchmarks/results/recipe_levers.json` (machine, command, figures).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, write_result

from components.evaluation import (
    BaselineSettings,
    compute_baselines,
    data_fingerprint,
    mean_auc,
    probe_embeddings,
    probe_variants,
    validation_probe,
    validation_users,
)
from components.ingestion import read_tables
from components.modeling import ModelConfig, UserEmbedder, build_model
from components.training import load_profile, train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "recipe_levers.json"
SEEDS = (0, 1, 2)
RECIPE = {"summary_tokens": True, "adapter_norm": True, "soft_token_rms": True}
VARIANTS = {
    "default (30 layers)": {},
    "8 layers": {"layers": 8},
    "summary + norm + rms (30 layers)": RECIPE,
    "summary + norm + rms, 8 layers": {**RECIPE, "layers": 8},
    "summary + norm + rms, 4 layers": {**RECIPE, "layers": 4},
}


def untrained(card, tables, data_dir: Path) -> list[dict]:
    users = validation_users(tables)
    tasks = [t.name for t in card.tasks]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        feats = compute_baselines(card, tables, users, ModelConfig(max_events=64), BaselineSettings(),
                                  data_fingerprint(data_dir), Path(cache))  # fmt: skip
    for name, f in feats.items():
        scores = probe_embeddings(
            dict(zip(users, f.matrix, strict=True)), tables.labels, tasks, users, seeds=SEEDS
        )
        rows.append({"what": f"baseline {name}", "universal": mean_auc(scores), "manual": None})
        print(rows[-1], flush=True)
    instructions = [card.task(t).instruction for t in tasks]
    for name, settings in VARIANTS.items():
        torch.manual_seed(0)
        model = build_model(card, tables.users, ModelConfig(max_events=64, **settings)).eval()
        t0 = time.perf_counter()
        vectors = UserEmbedder(model, card, tables).embed_many(users, [None, *instructions])
        universal, manual = probe_variants(card, tables.labels, users, vectors, SEEDS)
        rows.append({"what": f"untrained {name}", "universal": universal, "manual": manual,
                     "embed_s": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def trained(card, tables, data_dir: Path, tag: str, overrides: list[str]) -> list[dict]:
    config = load_profile("quick", overrides)
    with tempfile.TemporaryDirectory() as run:
        t0 = time.perf_counter()
        result = train(config, data_dir, Path(run), progress=True)
        wall = time.perf_counter() - t0
        score = validation_probe(result.model_dir, card, tables, SEEDS)
    row = {"what": f"trained {tag}", "overrides": overrides, "steps": result.steps, "train_s": round(wall),
           "tokens_per_s": result.tokens_per_s, "final": result.final,
           "universal": score.universal, "manual": score.manual}  # fmt: skip
    print(row, flush=True)
    return [row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["untrained", "train"])
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--tag", default="custom")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    data_dir = ROOT / "data" / args.dataset
    card, tables = read_tables(data_dir)
    rows = untrained(card, tables, data_dir) if args.mode == "untrained" else (
        trained(card, tables, data_dir, args.tag, args.overrides))  # fmt: skip
    report = json.loads(OUT.read_text()) if OUT.is_file() else {"benchmark": "recipe_levers", "runs": []}
    users = "566 labelled training users (validation probe), 3 seeds"
    command = shlex.join(["python", *sys.argv])
    report["runs"].append({"machine": machine(), "command": command, "users": users, "rows": rows})
    write_result(OUT, report)


if __name__ == "__main__":
    main()
