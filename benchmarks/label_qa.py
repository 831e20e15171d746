"""Does UserQA from the training users' recorded labels help the probe on *other* users? (issue 26)

    python benchmarks/label_qa.py --tag plain --set lr=1e-4              # behaviour families only
    python benchmarks/label_qa.py --tag labels --labels --set lr=1e-4    # + the recorded family
    python benchmarks/label_qa.py --tag transfer --transfer              # the encoder given the labels

The 566 labelled training users are split by id: those with `user_id % 5 == 4` (188) are held out
(never trained on with labels, never used for anything else); the `recorded` family
(components/userqa/recorded.py) answers for the other training users only, whatever the dataset's
own `userqa.parquet` holds (its recorded rows are dropped first). Each variant trains the quick
profile (`--set` overrides) and probes the held-out users (universal and manual, 5 seeds) beside the
sentence encoder's mean on the same users. No probe user is read. Results appended to
`benchmarks/results/label_qa.json`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import machine, write_result

from components.evaluation import (
    BaselineSettings,
    compute_baselines,
    data_fingerprint,
    mean_auc,
    probe_embeddings,
)
from components.ingestion import labelled_training_users, read_tables
from components.modeling import ModelConfig, UserEmbedder, load_model
from components.training import load_profile, train
from components.userqa import recorded

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "label_qa.json"
SEEDS = (0, 1, 2, 3, 4)


def held_out(tables) -> list[int]:
    return [u for u in labelled_training_users(tables) if u % 5 == 4]


def label_records(card, tables, users: list[int]) -> pd.DataFrame:
    """UserQA's `recorded` family (components/userqa/recorded.py) for `users`, under its first three
    paraphrases each (this benchmark's holdout is `user_id % 5 == 4`, not the product's)."""
    wide = tables.labels[tables.labels["user_id"].isin(users)].pivot(
        index="user_id", columns="task", values="label"
    )
    rows = []
    for u, labels in wide.iterrows():
        answer = " ".join(recorded.statement(t.description, int(labels[t.name])) for t in card.tasks)
        for instruction in recorded.PARAPHRASES[:3]:
            rows.append({"user_id": int(u), "family": recorded.RECORDED,
                         "task_id": recorded.RECORDED_TASK_ID,
                         "kind": "attribute", "window": "future", "instruction": instruction,
                         "answer": answer, "writer": "template", "passed": True, "reason": "",
                         "attempts": 1, "facts": "[]"})  # fmt: skip
    return pd.DataFrame(rows)


def transfer_rows(card, tables, hold: list[int], src: Path) -> list[dict]:
    """The encoder's mean given the same labels: per task a logistic head fitted on the other training
    users' encoder means; the held-out users probed on [mean, the six heads' logits]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    others = [u for u in labelled_training_users(tables) if u % 5 != 4]
    settings = BaselineSettings(names=["sentence_encoder"])
    f = compute_baselines(card, tables, others + hold, ModelConfig(max_events=64), settings,
                          data_fingerprint(src), ROOT / ".cache")["sentence_encoder"].matrix  # fmt: skip
    scaler = StandardScaler().fit(f[: len(others)])
    x_other, x_hold = scaler.transform(f[: len(others)]), scaler.transform(f[len(others) :])
    wide = tables.labels.pivot(index="user_id", columns="task", values="label")
    heads = []
    for t in card.tasks:
        y = wide.loc[others, t.name].to_numpy()
        heads.append(LogisticRegression(C=0.1, max_iter=2000).fit(x_other, y).decision_function(x_hold))
    tasks = [t.name for t in card.tasks]
    out = []
    variants = {"encoder + heads fitted on the same labels": np.column_stack([f[len(others) :], *heads]),
                "the heads' logits alone": np.column_stack(heads)}  # fmt: skip
    for what, feats in variants.items():
        scores = probe_embeddings(
            dict(zip(hold, feats, strict=True)), tables.labels, tasks, hold, seeds=SEEDS
        )
        out.append({"what": what, "universal": round(mean_auc(scores), 4)})
        print(out[-1], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--labels", action="store_true")
    p.add_argument("--only-labels", action="store_true")
    p.add_argument("--transfer", action="store_true", help="only the label-aware encoder rows")
    p.add_argument(
        "--clean",
        action="store_true",
        help="drop every UserQA row of the held-out users: unseen in training, as probe users are",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    src = ROOT / "data" / "movielens-100k"
    card, tables = read_tables(src)
    hold = held_out(tables)
    tasks = [t.name for t in card.tasks]
    rows = []
    if args.transfer:
        rows = transfer_rows(card, tables, hold, src)
        return _append(rows, hold)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "movielens-100k"
        shutil.copytree(src, data_dir)
        qa = pd.read_parquet(data_dir / "userqa.parquet")
        qa = qa[qa["family"] != recorded.RECORDED]
        if args.clean:
            qa = qa[~qa["user_id"].isin(hold)]
        if args.labels or args.only_labels:
            others = [u for u in labelled_training_users(tables) if u % 5 != 4]
            extra = label_records(card, tables, others)
            qa = extra if args.only_labels else pd.concat([qa, extra], ignore_index=True)
            print(f"{len(extra)} label records for {len(others)} users", flush=True)
        qa.to_parquet(data_dir / "userqa.parquet")
        settings = BaselineSettings(names=["sentence_encoder", "svd"])
        feats = compute_baselines(card, tables, hold, ModelConfig(max_events=64), settings,
                                  data_fingerprint(src), ROOT / ".cache")  # fmt: skip
        for name, f in feats.items():
            scores = probe_embeddings(dict(zip(hold, f.matrix, strict=True)), tables.labels, tasks, hold,
                                      seeds=SEEDS)  # fmt: skip
            rows.append({"what": f"baseline {name}", "universal": round(mean_auc(scores), 4)})
            print(rows[-1], flush=True)
        config = load_profile("quick", args.overrides)
        t0 = time.perf_counter()
        result = train(config, data_dir, Path(tmp) / "run", progress=True)
        wall = time.perf_counter() - t0
        model = load_model(result.model_dir)
        instructions = [card.task(t).instruction for t in tasks]
        vectors = UserEmbedder(model, card, tables).embed_many(hold, [None, *instructions])
        universal = mean_auc(probe_embeddings(dict(zip(hold, vectors[None], strict=True)), tables.labels,
                                              tasks, hold, seeds=SEEDS))  # fmt: skip
        manual_scores = [  # each task under its own manual instruction, probed once
            probe_embeddings(dict(zip(hold, vectors[i], strict=True)), tables.labels, [t], hold, seeds=SEEDS)[
                0
            ]
            for t, i in zip(tasks, instructions, strict=True)
        ]
        manual = mean_auc(manual_scores)
        per_task = {t: round(s.auc, 4) for t, s in zip(tasks, manual_scores, strict=True)}
        encoder_mean = feats["sentence_encoder"].matrix
        joined = {  # the served embedding beside the encoder's mean (a skip read-out, measured here first)
            name: mean_auc(probe_embeddings(dict(zip(hold, np.column_stack([v, encoder_mean]), strict=True)),
                                            tables.labels, [t] if t else tasks, hold, seeds=SEEDS))
            for name, t, v in [("universal", None, vectors[None]),
                               *[(t, t, vectors[i]) for t, i in zip(tasks, instructions, strict=True)]]
        }  # fmt: skip
        joined_manual = float(np.mean([joined[t] for t in tasks]))
        print({"with encoder mean": {"universal": round(joined["universal"], 4),
                                     "manual": round(joined_manual, 4)}})  # fmt: skip
        rows.append({"what": f"trained {args.tag}", "overrides": args.overrides, "labels": args.labels,
                     "clean": args.clean, "with_encoder_mean": {"universal": round(joined["universal"], 4),
                                                                "manual": round(joined_manual, 4)},
                     "only_labels": args.only_labels, "train_s": round(wall), "steps": result.steps,
                     "universal": round(universal, 4), "manual": round(manual, 4),
                     "manual_per_task": per_task, "final": result.final})  # fmt: skip
        print(rows[-1], flush=True)
    _append(rows, hold)


def _append(rows: list[dict], hold: list[int]) -> None:
    report = json.loads(OUT.read_text()) if OUT.is_file() else {"benchmark": "label_qa", "runs": []}
    report["runs"].append({"machine": machine(), "command": shlex.join(["python", *sys.argv]),
                           "users": f"{len(hold)} held-out training users (user_id % 5 == 4), 5 seeds",
                           "rows": rows})  # fmt: skip
    write_result(OUT, report)


if __name__ == "__main__":
    main()
