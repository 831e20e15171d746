"""Do instructions denoise? Probe AUC of universal, manual-instruction and tuned-instruction
embeddings on `synthetic-multisource` as the share of trait-free noise events grows.

    python benchmarks/denoising.py                                  # quick profile, noise 0 .. 0.8
    python benchmarks/denoising.py --set steps=20 --levels 0,0.6    # a shorter run
    python benchmarks/denoising.py --model runs/<run>/model --baselines all

InstructUE's claim: an instruction points the embedding at what the task needs, so instructed
(manual) and tuned embeddings lose less than the universal one when more of a user's behaviour is
unrelated to any trait. The synthetic reader's `noise` option is that share (a noise event is drawn
from a trait-free background; the same seed gives the same users at every level, the noise events
of a lower level a subset of a higher one's; labels come from the future window, which is noisy too,
so every representation loses something).

Steps, each skipped when its output is already there (the script resumes):

1. per level, ingest `synthetic-multisource` (`--n-users`, `--seed`, `noise=<level>`) into its own
   data root `<work>/data/n<N>-seed<S>-noise<level>/`;
2. one model: `--model`, or trained once with `--profile` and `--set` on the `--train-noise` level
   (UserQA by the template writer; run folder `<work>/model-<profile>-<key>/`, resumed if killed);
3. per level, `components.evaluation.evaluate` of that model (universal, manual, tuned; baselines
   from `--baselines`, by default only the sentence encoder as a reference line; `--eval-set` as
   `instructue evaluate --set`), its report kept as `<work>/levels/<model key>/noise-<level>.json`;
   a level whose file holds the same model, data and settings is read back, not evaluated again.

Prints rows = noise level, columns = each variant's mean AUC over the tasks and its drop from the
lowest level, and writes `benchmarks/results/denoising.json` and `denoising.png` (mean AUC against
noise share, one line per variant, dashed for baselines).

Time on the 2-core CPU (estimated from the components' measured figures): the quick profile trains
in about 16 minutes (100 steps); each level's evaluation of 2,000 users (800 probe users) takes
about 6 to 8 minutes (tuning ~2, embedding 13 representations ~3.5, probes ~1, sentence encoder
~1), so the default four levels take about 45 minutes. `--set steps=20` trains in about 3 minutes
(about 30 minutes in all); `--n-users 1000 --eval-set seeds=[0,1,2]` roughly halves the evaluation.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from common import machine, save_figure, write_result

ROOT = Path(__file__).resolve().parents[1]
DATASET = "synthetic-multisource"
VARIANTS = ("universal", "manual", "tuned")
# the variants keep the evaluation plots' colours; baselines get their own, never one of those
BASELINE_COLORS = {"raw_backbone": "tab:purple", "sentence_encoder": "tab:gray", "svd": "tab:brown",
                   "tabular": "tab:olive"}  # fmt: skip
DEFAULT_LEVELS = (0.0, 0.3, 0.6, 0.8)


def data_dir(work: Path, n_users: int, seed: int, noise: float) -> Path:
    """Ingest the level once; its dataset folder."""
    from components.ingestion import ingest, read_dataset

    root = work / "data" / f"n{n_users}-seed{seed}-noise{noise:g}"
    folder = root / DATASET
    if not (folder / "manifest.json").is_file():
        raw = read_dataset(DATASET, n_users=n_users, seed=seed, noise=noise)
        ingest(raw, root, work / "quarantine", progress=False)
    return folder


def train_model(work: Path, data: Path, profile: str, overrides: list[str], data_options: dict) -> Path:
    """Synthesise UserQA and train once per (profile, overrides, data); the model folder."""
    from components.training import MODEL_DIR, RESULT_FILE, load_profile, train
    from components.userqa import TemplateWriter, synthesize
    from flows.caching import key_of

    config = load_profile(profile, overrides)
    key = key_of("denoising-train", config=config.model_dump(mode="json"), data=data_options)
    run_dir = work / f"model-{config.profile}-{key.split('-')[-1][:8]}"
    if not (run_dir / RESULT_FILE).is_file():
        synthesize(data, TemplateWriter(), progress=False)
        print(f"training the {config.profile} profile on {data} into {run_dir}", flush=True)
        train(config, data, run_dir, resume=True)
    return run_dir / MODEL_DIR


def evaluate_level(model: Path, data: Path, settings, cache: Path) -> dict:
    """The JSON report (`components.evaluation.report.report_dict`) of `model` on one level."""
    from components.evaluation import evaluate_model, report_dict

    return report_dict(evaluate_model(model, data, settings, cache))


def means(report: dict) -> dict[str, float]:
    """Row name -> mean AUC over the tasks: the variants, then the baselines."""
    out = {v: report["headline"][f"mean_auc_{v}"] for v in VARIANTS}
    out = {v: float(m) for v, m in out.items() if m is not None}
    for b, by_task in report["baselines"].items():
        out[b] = float(np.mean([s["auc"] for s in by_task.values()]))
    return out


def table(levels: dict[float, dict[str, float]]) -> str:
    """Rows = noise level; per column its mean AUC and the drop from the lowest level."""
    first = min(levels)
    names = list(levels[first])
    head = " | ".join(f"{n} | drop" for n in names)
    lines = [f"| noise | {head} |", "|---:|" + "---:|---:|" * len(names)]
    for level, row in sorted(levels.items()):
        cells = []
        for n in names:
            value = row.get(n)
            cells += ["", ""] if value is None else [f"{value:.3f}", f"{levels[first][n] - value:+.3f}"]
        lines.append(f"| {level:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(levels: dict[float, dict[str, float]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from components.evaluation import COLORS

    xs = sorted(levels)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name in levels[xs[0]]:
        ys = [levels[x].get(name, np.nan) for x in xs]
        variant = name in VARIANTS
        color = COLORS.get(name, BASELINE_COLORS.get(name))
        ax.plot(xs, ys, "-o" if variant else "--s", color=color, label=name, lw=1.8 if variant else 1.0, ms=4)
    ax.axhline(0.5, ls=":", color="black", lw=0.8)
    ax.set_xlabel("noise share (events unrelated to any trait)")
    ax.set_ylabel("mean probe AUC over tasks")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default=",".join(f"{x:g}" for x in DEFAULT_LEVELS), help="noise shares")
    p.add_argument("--n-users", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0, help="the synthetic users")
    p.add_argument("--profile", default="quick", help="training profile (without --model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="profile override key=value")
    p.add_argument("--train-noise", type=float, default=0.3, help="the level the model is trained on")
    p.add_argument("--model", type=Path, default=None, help="evaluate this model folder; no training")
    p.add_argument("--baselines", default="sentence_encoder",
                   help="comma-separated baselines probed beside the model, 'all' or 'none'")  # fmt: skip
    p.add_argument("--eval-set", dest="eval_overrides", action="append", default=[],
                   help="evaluation setting key=value, as `instructue evaluate --set`")  # fmt: skip
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "denoising", help="data, model, levels")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "denoising.json")
    args = p.parse_args(argv)
    from components.evaluation import Baseline
    from components.modeling import WEIGHTS_FILE
    from flows.caching import folder_digest, key_of
    from flows.cli import parse_pairs
    from flows.evaluate import build_settings

    levels = sorted({float(x) for x in args.levels.split(",") if x.strip()})
    if not levels or not all(0.0 <= x < 1.0 for x in levels):
        p.error(f"--levels must be noise shares in [0, 1), got {args.levels!r}")
    wanted = args.baselines.strip()
    names = (
        [b.value for b in Baseline]
        if wanted == "all"
        else []
        if wanted in ("none", "")
        else wanted.split(",")
    )
    eval_overrides = {"baselines.names": names, **parse_pairs(args.eval_overrides)}
    settings = build_settings(ROOT, DATASET, eval_overrides)  # validated before any work starts
    work = args.work.resolve()
    t0 = time.perf_counter()

    def options(noise: float) -> dict:
        return {"n_users": args.n_users, "seed": args.seed, "noise": noise}

    if args.model is not None:
        model, trained_on = args.model.resolve(), None
    else:
        train_data = data_dir(work, args.n_users, args.seed, args.train_noise)
        model = train_model(work, train_data, args.profile, args.overrides, options(args.train_noise))
        trained_on = options(args.train_noise)
    model_key = key_of("denoising-model", path=str(model), weights=folder_digest(model, WEIGHTS_FILE))
    settings_json = settings.model_dump(mode="json")

    by_level, rows, reused = {}, {}, []
    for level in levels:
        data = data_dir(work, args.n_users, args.seed, level)
        key = key_of("denoising-level", model=model_key, data=options(level), settings=settings_json)
        file = work / "levels" / model_key.split("-")[-1][:12] / f"noise-{level:g}.json"
        done = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
        if done is not None and done.get("key") == key:
            reused.append(level)
        else:
            print(f"noise {level:g}: evaluating {model} on {data}", flush=True)
            start = time.perf_counter()
            report = evaluate_level(model, data, settings, work / "cache")
            done = {
                "key": key,
                "noise": level,
                "seconds": round(time.perf_counter() - start, 1),
                "report": report,
            }
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
        by_level[level] = done
        rows[level] = means(done["report"])

    text = table(rows)
    first = min(rows)
    drops = {n: rows[first][n] - rows[max(rows)].get(n, np.nan) for n in rows[first]}
    ordered = sorted((n for n in drops if n in VARIANTS), key=drops.get)
    line = (
        f"from noise {first:g} to {max(rows):g} the mean AUC drops by "
        + ", ".join(f"{n} {drops[n]:+.3f}" for n in ordered)
        + (f"; least loss: {ordered[0]}" if ordered else "")
    )
    print(f"\n{DATASET}, {args.n_users} users, model {model}\n\n{text}\n\n{line}")
    title = f"{DATASET}: {args.n_users} users, model trained on " + (
        f"noise {args.train_noise:g} ({args.profile})" if trained_on else model.parent.name
    )
    png = plot(rows, title, args.out.with_suffix(".png"))
    result = {
        "benchmark": "denoising",
        "machine": machine(),
        "command": shlex.join(
            ["python", "benchmarks/denoising.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "dataset": DATASET,
        "n_users": args.n_users,
        "seed": args.seed,
        "model": str(model),
        "trained_on": trained_on,
        "profile": None if args.model else args.profile,
        "overrides": None if args.model else args.overrides,
        "evaluation": {"baselines": names, "seeds": settings.seeds, "overrides": args.eval_overrides},
        "levels": [
            {
                "noise": level,
                "mean_auc": rows[level],
                "drop": {n: rows[first][n] - v for n, v in rows[level].items()},
                "tasks": by_level[level]["report"]["tasks"],
                "baselines": by_level[level]["report"]["baselines"],
                "n_probe_users": by_level[level]["report"]["n_probe_users"],
                "seconds": by_level[level]["seconds"],
                "reused": level in reused,
            }
            for level in levels
        ],  # fmt: skip
        "drop_lowest_to_highest": drops,
        "line": line,
        "table": text,
        "plot": png.name,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
