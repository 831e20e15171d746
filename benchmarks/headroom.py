"""How much a linear probe can gain over the frozen sentence encoder from information the model
could be given, measured on the 566 labelled training users only (issue 26; no probe user is read).

    python benchmarks/headroom.py

1. Collaborative signal: the sentence encoder's mean of event vectors (384-d) beside the SVD user
   factors of the profile window (64-d), probed together, against either alone.
2. Supervision: the training users split 383 / 183; a logistic head per task fitted on the 383 (on the
   encoder mean, or the mean and SVD), its six scores probed on the 183 (the probe protocol: halves,
   3 seeds), against the representation itself. This is what training on the probe tasks' labels of
   training users would buy, the labels the gate's comparison withholds from every baseline.
Writes `benchmarks/results/headroom.json`.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import machine, write_result
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from components.evaluation import (
    Baseline,
    BaselineSettings,
    compute_baselines,
    data_fingerprint,
    mean_auc,
    probe_embeddings,
    validation_users,
)
from components.ingestion import read_tables
from components.modeling import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def probe(users, matrix, labels, tasks) -> float:
    return mean_auc(
        probe_embeddings(dict(zip(users, matrix, strict=True)), labels, tasks, users, seeds=SEEDS)
    )


def heads(X, fit, score, users, labels, tasks) -> np.ndarray:
    """One logistic head per task fitted on the `fit` rows; their decision scores on the `score` rows."""
    out = []
    for t in tasks:
        lab = labels[labels["task"] == t].set_index("user_id")["label"]
        y = np.array([lab.get(users[i], np.nan) for i in fit])
        ok = ~np.isnan(y)
        scaler = StandardScaler().fit(X[fit][ok])
        model = LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1, 1.0], cv=3, scoring="roc_auc", max_iter=2000)
        model.fit(scaler.transform(X[fit][ok]), y[ok])
        out.append(model.decision_function(scaler.transform(X[score])))
    return np.stack(out, axis=1)


def main() -> None:
    warnings.filterwarnings("ignore")
    data_dir = ROOT / "data" / "movielens-100k"
    card, tables = read_tables(data_dir)
    users, tasks, labels = validation_users(tables), [t.name for t in card.tasks], tables.labels
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        settings = BaselineSettings(names=[Baseline.SENTENCE_ENCODER, Baseline.SVD])
        config, digest = ModelConfig(max_events=64), data_fingerprint(data_dir)
        feats = compute_baselines(card, tables, users, config, settings, digest, Path(cache))
    se, svd = feats["sentence_encoder"].matrix, feats["svd"].matrix
    rows = [
        {
            "what": "sentence encoder (mean of event vectors)",
            "users": 566,
            "mean_auc": probe(users, se, labels, tasks),
        },
        {"what": "SVD user factors", "users": 566, "mean_auc": probe(users, svd, labels, tasks)},
        {
            "what": "both side by side",
            "users": 566,
            "mean_auc": probe(users, np.concatenate([se, svd], 1), labels, tasks),
        },
    ]
    rng = np.random.default_rng(0)
    for rep in range(2):
        perm = rng.permutation(len(users))
        fit, score = perm[:383], perm[383:]
        held = [users[i] for i in score]
        for name, X in (("sentence encoder", se), ("sentence encoder + SVD", np.concatenate([se, svd], 1))):
            h = heads(X, fit, score, users, labels, tasks)
            rows.append(
                {
                    "what": f"split {rep}: {name}",
                    "users": 183,
                    "mean_auc": probe(held, X[score], labels, tasks),
                }
            )
            what = f"split {rep}: six task heads fitted on 383 other users ({name})"
            rows.append({"what": what, "users": 183, "mean_auc": probe(held, h, labels, tasks)})
    for r in rows:
        r["mean_auc"] = round(float(r["mean_auc"]), 4)
        print(f"{r['mean_auc']:.4f}  {r['what']}  ({r['users']} users)")
    report = {"benchmark": "headroom", "machine": machine(), "command": "python benchmarks/headroom.py",
              "seeds": list(SEEDS), "seconds": round(time.perf_counter() - t0, 1), "rows": rows}  # fmt: skip
    write_result(ROOT / "benchmarks" / "results" / "headroom.json", report)


if __name__ == "__main__":
    main()
