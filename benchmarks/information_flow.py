"""Where does the user's information go? The probe AUC of each stage of the model, on the probe users.

    python benchmarks/information_flow.py --model runs/<run>/model                 # a trained model
    python benchmarks/information_flow.py --untrained --profile quick              # its starting point
    python benchmarks/information_flow.py --untrained --layers 0,1,2,4,8,16,30 --seeds 0,1,2

One universal pass (no instruction, the universal route) over the dataset's probe users keeps every
layer's hidden states (`InstructUE.layer_states`); each stage becomes one vector per user, L2-normalised,
and is probed like the evaluation's variants (`probe_embeddings`: logistic regression on standardised
features, 50/50 halves, several seeds), mean AUC over the card's tasks:

- `encoder_mean`: the mean of the sentence encoder's vectors of the user's events (multi-encoder
  input only), what the `sentence_encoder` baseline averages (without its tabular chunk);
- `soft_mean`: the mean of the user's soft tokens (the adapters' outputs, events and tabular);
- `layer_<k>/user`: the hidden state at `<USER>` after decoder layer k, k >= 1 (the last layer's,
  after the final norm, is the model's universal embedding);
- `layer_<k>/block_mean`: the mean over the user block's positions after layer k;
- `embedding+soft_mean`: the embedding and the soft tokens' mean side by side (a skip connection from
  the input to the output: does the backbone add anything a probe can use?).

On MovieLens-100k the question it answers is why the model trails a sentence encoder's average of
the very vectors it reads: if `encoder_mean` probes high and the layers low, the information is in
the input and the backbone's states do not expose it linearly. Prints a table, writes
`benchmarks/results/information_flow_<dataset>_<tag>.json` and a line plot of AUC over depth. The
quick model's pass over 377 users takes about 30 s on the 2-core CPU; each probed stage 5-10 s.
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
from common import machine, save_figure, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _mean_rows(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return values[rows].mean(0) if len(rows) else torch.zeros(values.shape[1], dtype=values.dtype)


@torch.inference_mode()
def stage_vectors(
    model, card, tables, ids: list[int], layers: list[int], batch_size: int
) -> dict[str, np.ndarray]:
    """stage name -> (len(ids), d) L2-normalised vectors, users in `ids` order."""
    from components.modeling import InputMode, UserEmbedder, build_profiles

    users = UserEmbedder(model, card, tables).users
    profiles = build_profiles(card, tables, ids, model.config.max_events)
    multi = model.config.input_mode is InputMode.MULTI_ENCODER
    out: dict[str, list[torch.Tensor]] = {}

    def add(name: str, v: torch.Tensor) -> None:
        out.setdefault(name, []).append(F.normalize(v.float().cpu(), dim=-1))

    for start in range(0, len(ids), batch_size):
        chunk = list(range(start, min(start + batch_size, len(ids))))
        batch = model.batch(
            [profiles[i] for i in chunk], users.loc[[ids[i] for i in chunk]].reset_index(drop=True)
        )
        states, plan, suffix_len = model.layer_states(batch, None)
        codes, lengths, mask = plan.codes, plan.lengths, plan.mask.bool()
        if multi:
            soft = model.soft_tokens(batch).float().cpu()
            vec = model.encoder.encode(batch.event_texts).float().cpu() if batch.event_texts else None
            n_events = len(batch.event_texts)
            for b in range(len(chunk)):
                own = (-codes[b][codes[b] < 0] - 1).long()  # this user's soft-token rows
                add("soft_mean", _mean_rows(soft, own)[None])
                if vec is not None:
                    add("encoder_mean", _mean_rows(vec, own[own < n_events])[None])
        block = mask & (torch.arange(mask.shape[1])[None, :] < (lengths - suffix_len)[:, None])
        for k in layers:
            h = states[k].float().cpu()
            if k > 0:  # layer 0 at <USER> is its token row: the same for every user
                add(f"layer_{k}/user", h[torch.arange(len(chunk)), lengths - 1])
            m = block.unsqueeze(-1).float()
            add(f"layer_{k}/block_mean", (h * m).sum(1) / m.sum(1).clamp(min=1))
    vectors = {name: torch.cat(parts).numpy() for name, parts in out.items()}
    last = f"layer_{len(model.backbone.base_model.layers)}/user"
    if "soft_mean" in vectors and last in vectors:  # a skip from the input to the embedding: does it add?
        both = np.concatenate([vectors[last], vectors["soft_mean"]], axis=1)
        vectors["embedding+soft_mean"] = both / np.linalg.norm(both, axis=1, keepdims=True)
    return vectors


def build(args):
    from components.ingestion import read_tables
    from components.modeling import build_model, load_model
    from components.training import load_profile

    card, tables = read_tables(ROOT / "data" / args.dataset if args.data is None else Path(args.data))
    if args.untrained:
        config = load_profile(args.profile, args.set).model
        torch.manual_seed(args.init_seed)
        model = build_model(card, tables.users, config).eval()
    else:
        if args.model is None:
            raise SystemExit("pass --model <model folder> or --untrained")
        model = load_model(Path(args.model), **({"bf16": False} if args.fp32 else {})).eval()
    return card, tables, model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a model folder (runs/<run>/model, merged, checkpoints/step-N)")
    ap.add_argument("--untrained", action="store_true", help="a fresh model of --profile instead")
    ap.add_argument("--profile", default="quick")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="--untrained: profile override"
    )
    ap.add_argument("--init-seed", type=int, default=0, help="--untrained: torch seed of the new parts")
    ap.add_argument(
        "--fp32", action="store_true", help="--model: force fp32 (the folder's precision otherwise)"
    )
    ap.add_argument("--dataset", default="movielens-100k")
    ap.add_argument("--data", help="the dataset folder (default data/<dataset>)")
    ap.add_argument(
        "--layers", help="comma-separated layer indices (default: 0, 1, 2, then every 4th, and the last)"
    )
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--out", help="JSON path (default: benchmarks/results/information_flow_<dataset>_<tag>.json)"
    )
    ap.add_argument("--tag", help="result name suffix (default: untrained or the model folder's name)")
    args = ap.parse_args(argv)

    from components.evaluation import mean_auc, probe_embeddings, probe_user_ids

    card, tables, model = build(args)
    n_layers = len(model.backbone.base_model.layers)
    layers = (
        sorted({int(x) for x in args.layers.split(",")})
        if args.layers
        else sorted({0, 1, 2, *range(4, n_layers, 4), n_layers})
    )
    if not all(0 <= k <= n_layers for k in layers):
        raise SystemExit(f"--layers must lie in 0..{n_layers} (the backbone has {n_layers} layers)")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    tasks = [t.name for t in card.tasks]
    ids = probe_user_ids(tables, tasks)
    print(
        f"{len(ids)} probe users, {len(tasks)} tasks, layers {layers}, bf16={model.uses_bf16()}", flush=True
    )

    t0 = time.perf_counter()
    vectors = stage_vectors(model, card, tables, ids, layers, args.batch_size)
    pass_s = time.perf_counter() - t0
    rows = []
    for name, X in vectors.items():
        if np.ptp(X, axis=0).max() < 1e-7:  # the same vector for every user: nothing to probe
            rows.append({"stage": name, "mean_auc": 0.5, "per_task": {}, "constant": True})
            continue
        scores = probe_embeddings(dict(zip(ids, X, strict=True)), tables.labels, tasks, ids, seeds=seeds)
        rows.append({"stage": name, "mean_auc": round(mean_auc(scores), 4),
                     "per_task": {s.task: round(s.auc, 4) for s in scores}})  # fmt: skip
        cells = " ".join(f"{v:.3f}" for v in rows[-1]["per_task"].values())
        print(f"{name:24s} {rows[-1]['mean_auc']:.4f}  {cells}", flush=True)

    tag = args.tag or ("untrained" if args.untrained else Path(args.model).name)
    out = Path(args.out) if args.out else RESULTS / f"information_flow_{args.dataset}_{tag}.json"
    report = {
        "machine": machine(),
        "command": "python benchmarks/information_flow.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "model": "untrained " + args.profile if args.untrained else args.model,
        "bf16": model.uses_bf16(),
        "n_users": len(ids),
        "seeds": list(seeds),
        "layers": layers,
        "pass_s": round(pass_s, 1),
        "rows": rows,
    }
    write_result(out, report)
    plot(rows, layers, out.with_suffix(".png"), f"{args.dataset}: {report['model']}")
    return 0


def plot(rows: list[dict], layers: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["stage"]: r["mean_auc"] for r in rows}
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, style, label in (("user", "o-", "<USER> state"), ("block_mean", "s--", "user block mean")):
        ks = [k for k in layers if f"layer_{k}/{kind}" in by]
        ax.plot(ks, [by[f"layer_{k}/{kind}"] for k in ks], style, label=label)
    for name, color in (
        ("encoder_mean", "tab:gray"),
        ("soft_mean", "tab:olive"),
        ("embedding+soft_mean", "tab:red"),
    ):
        if name in by:
            ax.axhline(by[name], color=color, linestyle=":", label=name)
    ax.axhline(0.5, color="black", linewidth=0.5)
    ax.set(xlabel="decoder layer (0: input embeddings)", ylabel="mean probe AUC", title=title)
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
