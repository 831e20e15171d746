"""Probe mean AUC against training steps and wall seconds (issue 26): does more training still help?

    python benchmarks/learning_curve.py --recipe quick --steps 0,30,60,120,240
    python benchmarks/learning_curve.py --recipe before-26 --steps 0,30,60

One run of the trainer (no tracking) per recipe, a checkpoint at every step of `--steps` (their
greatest common divisor as `checkpoint_every`, all of them kept), then each checkpoint's model and the
step-0 model (`initial/`) probed on the **probe users** (universal and under each task's manual
instruction, the evaluation's probe, `--seeds` splits). This is a measurement, never a selection:
nothing here picks a checkpoint or a setting, and no probe user's data reaches training. Wall seconds
are read from the checkpoint folders' times against `initial/` (checkpoint writing included).

Recipes: `quick` is the quick profile as it is; `before-26` is the quick profile as it stood before
issue 26 (30 layers, `<USER>` read-out, next-token plus InfoNCE on the answers' states, one lr 1e-3).
`--set` overrides come after a recipe's own. Each recipe's curve is stored under its name in
`benchmarks/results/learning_curve.json` (replacing an older curve of that name, the others kept)
and all stored curves are drawn into `learning_curve.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
from functools import reduce
from pathlib import Path

from common import machine, save_figure, write_result

from components.evaluation import probe_variants
from components.ingestion import Split, read_tables
from components.modeling import UserEmbedder, load_model
from components.training import INITIAL_DIR, load_profile, step_dir, train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "learning_curve.json"
RECIPES: dict[str, list[str]] = {
    "quick": [],
    # The quick profile's model and objective before issue 26 (see benchmarks/README, "Quality").
    "before-26": [
        "model.layers=null", "model.summary_tokens=false", "model.adapter_norm=false",
        "model.soft_token_rms=false", "model.pooling=user_token", "model.answer_encoder=false",
        "model.reconstruction_head=false", "alpha_rec=0.0", "no_ntp=false", "lr=1.0e-3", "groups={}",
    ],
}  # fmt: skip


def probe_model(model_dir: Path, card, tables, users: list[int], seeds: tuple[int, ...]) -> dict:
    instructions = [card.task(t.name).instruction for t in card.tasks]
    vectors = UserEmbedder(load_model(model_dir), card, tables).embed_many(users, [None, *instructions])
    universal, manual = probe_variants(card, tables.labels, users, vectors, seeds)
    return {"universal": round(universal, 4), "manual": round(manual, 4)}


def curve(recipe: str, overrides: list[str], steps: list[int], data_dir: Path, seeds: tuple[int, ...]):
    card, tables = read_tables(data_dir)
    users = sorted(tables.users.loc[tables.users["split"] == Split.PROBE.value, "user_id"].astype(int))
    every = reduce(math.gcd, [s for s in steps if s > 0])
    schedule = [f"steps={max(steps)}", f"checkpoint_every={every}", f"keep_checkpoints={max(steps) // every}"]
    config = load_profile("quick", [*RECIPES[recipe], *overrides, *schedule])
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        result = train(config, data_dir, run, progress=True)
        start = (run / INITIAL_DIR).stat().st_mtime
        for step in steps:
            folder = step_dir(run, step) if step else run / INITIAL_DIR
            wall = round(folder.stat().st_mtime - start, 1) if step else 0.0
            probed = probe_model(folder, card, tables, users, seeds)
            points.append({"step": step, "wall_s": wall, **probed})
            print(points[-1], flush=True)
    return {"recipe": recipe, "overrides": [*RECIPES[recipe], *overrides], "points": points,
            "train_wall_s": round(result.wall_s, 1), "tokens_per_s": round(result.tokens_per_s, 1),
            "final": result.final, "users": f"{len(users)} probe users, seeds {list(seeds)}"}  # fmt: skip


def plot(curves: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, c in curves.items():
        for variant, style in (("universal", "-o"), ("manual", "--s")):
            xs = [p["step"] for p in c["points"]]
            ws = [p["wall_s"] for p in c["points"]]
            ys = [p[variant] for p in c["points"]]
            axes[0].plot(xs, ys, style, label=f"{name} {variant}")
            axes[1].plot(ws, ys, style, label=f"{name} {variant}")
    for ax, xlabel in zip(axes, ("training step", "training wall seconds (this host)"), strict=True):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probe mean AUC (6 tasks, probe users)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Learning curves, MovieLens-100k")
    return save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="quick")
    p.add_argument("--steps", default="0,30,60,120,240", help="comma-separated steps to probe (0: untrained)")
    p.add_argument("--seeds", type=int, default=5, help="probe splits per point")
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    steps = sorted({int(s) for s in args.steps.split(",")})
    if len(steps) < 2 or steps[0] < 0:
        raise SystemExit(f"--steps needs at least two non-negative steps, got {args.steps!r}")
    got = curve(args.recipe, args.overrides, steps, ROOT / "data" / args.dataset, tuple(range(args.seeds)))
    report = json.loads(OUT.read_text()) if OUT.is_file() else {"benchmark": "learning_curve", "curves": {}}
    command = shlex.join(["python", *sys.argv])
    report["curves"][args.recipe] = {**got, "machine": machine(), "command": command}
    report["plot"] = str(plot(report["curves"], OUT.with_suffix(".png")).relative_to(ROOT))
    write_result(OUT, report)


if __name__ == "__main__":
    main()
