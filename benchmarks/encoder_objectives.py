"""Can any self-supervised objective on the training users beat the plain mean of event vectors?

    python benchmarks/encoder_objectives.py                 # both objectives, 3 training seeds
    python benchmarks/encoder_objectives.py --steps 600

A ceiling check for issue 26 without the LLM: the frozen sentence encoder's vectors of each user's
64 most recent profile events, and a small network (LayerNorm, 384 -> 512 GELU -> 128) trained on
half of the 566 labelled training users with one of two objectives, then probed (the evaluation's
linear probe, 3 splits) on the **other** half, which no objective saw:

- `future`: InfoNCE from a user's history (a random 70% of the events, mean vector) to the mean
  vector of the same user's future-window events (as the UserQA future families read them), 256
  users a batch: the embedding forecasts the user's next events;
- `views`: InfoNCE between two random halves of the same history (SimCLR on users).

Rows: the plain mean (the `sentence_encoder` baseline's reading, per event), the network's 128-d
output, its 512-d hidden layer, and the output concatenated with the mean. No probe user is read.
`benchmarks/results/encoder_objectives.json`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import machine, write_result
from torch import nn

from components.evaluation import mean_auc, probe_embeddings, validation_users
from components.ingestion import profile_mask, read_tables
from components.modeling import ModelConfig, default_cache_dir, load_encoder

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "encoder_objectives.json"
MAX_EVENTS = 64
PROBE_SEEDS = (0, 1, 2)


def event_vectors(tables, users: list[int]) -> tuple[torch.Tensor, dict, dict]:
    """Encoder vectors of every distinct event text, and per user the rows of its last 64 profile
    events and of all its future events."""
    ev = tables.events[tables.events["user_id"].isin(users)]
    profile = profile_mask(ev, tables.cutoffs[tables.cutoffs["user_id"].isin(users)])
    texts = sorted(set(ev["text"]))
    encoder = load_encoder(ModelConfig(), torch.device("cpu"), default_cache_dir())
    vectors = encoder.encode(texts).float()
    row = {t: i for i, t in enumerate(texts)}
    ev = ev.assign(row=ev["text"].map(row), profile=profile)
    history, future = {}, {}
    for u, g in ev.groupby("user_id", sort=False):
        history[int(u)] = torch.tensor(g.loc[g["profile"], "row"].to_numpy()[-MAX_EVENTS:])
        future[int(u)] = torch.tensor(g.loc[~g["profile"], "row"].to_numpy())
    return vectors, history, future


def means(vectors: torch.Tensor, rows: list[torch.Tensor], keep: float | None = None) -> torch.Tensor:
    """Mean vector per user; with `keep`, of a random share of its rows (at least one)."""
    out = []
    for r in rows:
        if keep is not None and len(r):
            r = r[torch.randperm(len(r))[: max(1, int(len(r) * keep))]]
        out.append(vectors[r].mean(0) if len(r) else torch.zeros(vectors.shape[1]))
    return torch.stack(out)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_objective(objective, vectors, history, future, fit_users, steps, seed) -> nn.Sequential:
    torch.manual_seed(seed)
    d = vectors.shape[1]
    net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 512), nn.GELU(), nn.Linear(512, 128))
    target = nn.Linear(d, 128)  # the future mean's projection (`future` only)
    opt = torch.optim.AdamW([*net.parameters(), *target.parameters()], lr=1e-3, weight_decay=0.01)
    future_means = means(vectors, [future[u] for u in fit_users])
    for _ in range(steps):
        batch = torch.randperm(len(fit_users))[:256]
        rows = [history[fit_users[i]] for i in batch]
        if objective == "future":
            loss = info_nce(net(means(vectors, rows, 0.7)), target(future_means[batch]))
        else:
            loss = info_nce(net(means(vectors, rows, 0.5)), net(means(vectors, rows, 0.5)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3, help="training seeds (each its own split of the users)")
    p.add_argument("--dataset", default="movielens-100k")
    args = p.parse_args()
    card, tables = read_tables(ROOT / "data" / args.dataset)
    tasks = [t.name for t in card.tasks]
    users = validation_users(tables)
    vectors, history, future = event_vectors(tables, users)
    scores: dict[str, list[float]] = {}

    def probe(name: str, matrix: torch.Tensor, held_out: list[int]) -> None:
        got = probe_embeddings(dict(zip(held_out, matrix.detach().numpy(), strict=True)), tables.labels,
                               tasks, held_out, seeds=PROBE_SEEDS)  # fmt: skip
        scores.setdefault(name, []).append(mean_auc(got))

    t0 = time.perf_counter()
    for seed in range(args.seeds):
        order = np.random.RandomState(seed).permutation(len(users))
        fit = [users[i] for i in order[: len(users) // 2]]
        held_out = [users[i] for i in order[len(users) // 2 :]]
        plain = means(vectors, [history[u] for u in held_out])
        probe("mean of event vectors", plain, held_out)
        for objective in ("future", "views"):
            net = train_objective(objective, vectors, history, future, fit, args.steps, seed)
            with torch.no_grad():
                out, hidden = net(plain), net[:3](plain)
            probe(f"{objective}: 128-d output", out, held_out)
            probe(f"{objective}: 512-d hidden", hidden, held_out)
            probe(f"{objective}: output + mean", torch.cat([plain, F.normalize(out, dim=-1)], -1), held_out)
    rows = [{"what": k, "mean_auc": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4)}
            for k, v in scores.items()]  # fmt: skip
    print(f"{'representation':36s} mean AUC (held-out half, {args.seeds} training seeds)")
    for r in rows:
        print(f"{r['what']:36s} {r['mean_auc']:.3f} +- {r['std']:.3f}")
    write_result(OUT, {"benchmark": "encoder_objectives", "machine": machine(),
                       "command": shlex.join(["python", *sys.argv]), "steps": args.steps,
                       "users": f"{len(users)} labelled training users, halves; no probe user",
                       "wall_s": round(time.perf_counter() - t0, 1), "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
