"""InstructUE Table 2 on one dataset: every baseline and model variant on the card's probe tasks.

    python benchmarks/quality.py                                    # newest runs/movielens-100k-quick-*
    python benchmarks/quality.py --run-dir runs/movielens-100k-quick-e8bca935
    python benchmarks/quality.py --model runs/<run>/model --data data/movielens-100k --set seeds=[0,1]

Rows: the baselines of `components/evaluation/baselines.py` (raw backbone, sentence encoder, SVD,
tabular) and the variants (universal, manual, tuned); columns: the tasks, then the mean over tasks.
Each cell is the probe's AUC (a second table: KS) as mean ± std over the probe's seeds (InstructUE
4.1: logistic regression, 50/50 stratified halves, every row of a task on the same halves).

The numbers come from an evaluation report (`<run>/evaluation/report.json`, written by
`instructue evaluate` or `instructue retrain`); it keeps mean and std per task, not the per-seed
values. With `--model` and `--data` the model is evaluated now by `components.evaluation.evaluate`
(baseline features cached under `<root>/.cache/baselines/`; `--set` as `instructue evaluate --set`),
and the report goes to `<run>/evaluation-quality-<model folder>/`, never over a flow's own report.

Writes `benchmarks/results/quality_<dataset>.json` (the machine, the command, the report, the rows,
the best baseline and whether and by how much the tuned variant beats every baseline) and a bar
plot beside it. Reading a report takes a second; evaluating the quick model on MovieLens-100k took
437 s on the 2-core CPU (README "Retraining"), less with cached baselines.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from common import machine, save_figure, write_result

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("universal", "manual", "tuned")
# the variants keep the evaluation plots' colours; baselines get their own, never one of those
BASELINE_COLORS = {"raw_backbone": "tab:purple", "sentence_encoder": "tab:gray", "svd": "tab:brown",
                   "tabular": "tab:olive"}  # fmt: skip
REPORT_JSON = "report.json"


# -- where the report is -----------------------------------------------------------------------------
def newest_report(runs: Path, dataset: str, profile: str) -> Path:
    """The newest `<runs>/<dataset>-<profile>*/evaluation*/report.json`."""
    found = sorted(
        runs.glob(f"{dataset}-{profile}*/evaluation*/{REPORT_JSON}"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise SystemExit(
            f"no evaluation report under {runs}/{dataset}-{profile}*/evaluation*/; run "
            f"`instructue retrain --dataset {dataset} --profile {profile}`, or pass --run-dir, or "
            "--model and --data to evaluate now"
        )
    return found[-1]


def report_in(run_dir: Path) -> Path:
    """A run folder's `evaluation/report.json` (else its newest `evaluation*/`), an evaluation
    folder's report, or the report file itself."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    for candidate in (run_dir / REPORT_JSON, run_dir / "evaluation" / REPORT_JSON):
        if candidate.is_file():
            return candidate
    found = sorted(run_dir.glob(f"evaluation*/{REPORT_JSON}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{run_dir} holds no evaluation*/{REPORT_JSON}; evaluate the run first")
    return found[-1]


def evaluate_now(model: Path, data_dir: Path, root: Path, overrides: dict, report_dir: Path | None) -> Path:
    """Evaluate `model` on `data_dir` (every variant and baseline) and write its report; its path."""
    from components.evaluation import evaluate_model, write_report
    from flows.evaluate import CACHE_DIR, build_settings

    model, data_dir = Path(model).resolve(), Path(data_dir).resolve()
    settings = build_settings(root, data_dir.name, overrides)
    folder = report_dir or model.parent / f"evaluation-quality-{model.name}"
    result = evaluate_model(model, data_dir, settings, root / CACHE_DIR)
    write_report(result, folder)
    return folder / REPORT_JSON


# -- the table -----------------------------------------------------------------------------------------
def rows_of(report: dict) -> dict[str, dict]:
    """name -> {"kind", "tasks": {task: {auc, auc_std, ks, ks_std}}, "mean_auc", "mean_ks"}; the
    baselines first (report order), then the variants present."""
    tasks = list(report["tasks"])
    named = [(b, "baseline", report["baselines"][b]) for b in report["baselines"]]
    for v in VARIANTS:
        by_task = {t: report["tasks"][t][v] for t in tasks if v in report["tasks"][t]}
        if by_task:
            named.append((v, "variant", by_task))
    keep = ("auc", "auc_std", "ks", "ks_std")
    out = {}
    for name, kind, by_task in named:
        cells = {t: {k: float(by_task[t][k]) for k in keep} for t in tasks if t in by_task}
        out[name] = {
            "kind": kind,
            "tasks": cells,
            "mean_auc": float(np.mean([c["auc"] for c in cells.values()])),
            "mean_ks": float(np.mean([c["ks"] for c in cells.values()])),
        }
    return out


def markdown(rows: dict[str, dict], tasks: list[str], metric: str) -> str:
    """Rows x (tasks, mean); cells `mean ± std` of `metric` ("auc" or "ks"); the best of a column bold."""
    best = {
        t: max((r["tasks"][t][metric] for r in rows.values() if t in r["tasks"]), default=None) for t in tasks
    }
    best_mean = max(r[f"mean_{metric}"] for r in rows.values())
    lines = [f"| {metric.upper()} | " + " | ".join(tasks) + " | mean |", "|---|" + "---:|" * (len(tasks) + 1)]
    for name, r in rows.items():
        cells = []
        for t in tasks:
            c = r["tasks"].get(t)
            if c is None:
                cells.append("")
                continue
            text = f"{c[metric]:.3f} ± {c[metric + '_std']:.3f}"
            cells.append(f"**{text}**" if c[metric] == best[t] else text)
        mean = f"{r[f'mean_{metric}']:.3f}"
        cells.append(f"**{mean}**" if r[f"mean_{metric}"] == best_mean else mean)
        label = name if r["kind"] == "variant" else f"{name} (baseline)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: dict[str, dict], tasks: list[str]) -> dict:
    """The best baseline, and whether the tuned variant (else the best variant) beats every baseline:
    on the mean and task by task, with its margins over the strongest baseline of each."""
    baselines = {n: r for n, r in rows.items() if r["kind"] == "baseline"}
    variants = {n: r for n, r in rows.items() if r["kind"] == "variant"}
    if not variants:
        raise SystemExit("the report holds no model variant")
    ours = "tuned" if "tuned" in variants else max(variants, key=lambda v: variants[v]["mean_auc"])
    mine = variants[ours]
    if not baselines:
        return {"variant": ours, "mean_auc": mine["mean_auc"], "best_baseline": None,
                "line": f"no baseline in the report; {ours} mean AUC {mine['mean_auc']:.3f}"}  # fmt: skip
    best = max(baselines, key=lambda b: baselines[b]["mean_auc"])
    margin_mean = mine["mean_auc"] - baselines[best]["mean_auc"]
    per_task = {}
    for t in tasks:
        theirs = {b: r["tasks"][t]["auc"] for b, r in baselines.items() if t in r["tasks"]}
        if t not in mine["tasks"] or not theirs:
            continue
        top = max(theirs, key=theirs.get)
        per_task[t] = {"best_baseline": top, "margin": mine["tasks"][t]["auc"] - theirs[top]}
    won = [t for t, m in per_task.items() if m["margin"] > 0]
    beats_mean = all(mine["mean_auc"] > r["mean_auc"] for r in baselines.values())
    lost = ", ".join(
        f"{t} {m['margin']:+.3f} vs {m['best_baseline']}" for t, m in per_task.items() if t not in won
    )
    line = (
        f"best baseline: {best} (mean AUC {baselines[best]['mean_auc']:.3f}); {ours} {mine['mean_auc']:.3f} "
        f"{'beats' if beats_mean else 'does NOT beat'} every baseline on the mean "
        f"(margin {margin_mean:+.3f}) "
        f"and beats the strongest baseline on {len(won)}/{len(per_task)} tasks"
        + (f" (behind on: {lost})" if lost else "")
    )
    return {
        "variant": ours,
        "mean_auc": mine["mean_auc"],
        "best_baseline": best,
        "best_baseline_mean_auc": baselines[best]["mean_auc"],
        "beats_every_baseline_on_mean": beats_mean,
        "mean_margin": margin_mean,
        "beats_every_baseline_on_every_task": len(won) == len(per_task),
        "tasks_won": won,
        "per_task": per_task,
        "line": line,
    }


def plot(rows: dict[str, dict], tasks: list[str], title: str, path: Path) -> Path:
    """Grouped bars: one group per task and the mean, one bar per row, std as error bars."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from components.evaluation import COLORS

    groups = [*tasks, "mean"]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.5 * len(groups)), 4.2))
    x = np.arange(len(groups))
    for k, (name, r) in enumerate(rows.items()):
        auc = [r["tasks"].get(t, {}).get("auc", np.nan) for t in tasks] + [r["mean_auc"]]
        std = [r["tasks"].get(t, {}).get("auc_std", 0.0) for t in tasks] + [np.nan]  # no bar on the mean
        hatch = None if r["kind"] == "variant" else "//"
        color = COLORS.get(name, BASELINE_COLORS.get(name))
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, auc, width, yerr=std, label=name, hatch=hatch,
               color=color, alpha=0.9, capsize=2, edgecolor="white", linewidth=0.3)  # fmt: skip
    ax.axhline(0.5, ls=":", color="black", lw=0.8)
    ax.set_xticks(x, groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("probe AUC (mean ± std over seeds)")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", default="movielens-100k", help="picks the newest run when --run-dir is absent"
    )
    p.add_argument("--profile", default="quick", help="picks the newest run when --run-dir is absent")
    p.add_argument("--run-dir", type=Path, default=None, help="a run, evaluation folder or report.json")
    p.add_argument("--model", type=Path, default=None, help="evaluate this model folder now (with --data)")
    p.add_argument("--data", type=Path, default=None, help="the dataset folder data/<name> for --model")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="with --model: evaluation key=value (`instructue evaluate --set`)")  # fmt: skip
    p.add_argument("--report-dir", type=Path, default=None, help="where --model's report goes")
    p.add_argument("--root", type=Path, default=ROOT, help="project root: runs/, .cache/, mlruns_config/")
    p.add_argument("--out", type=Path, default=None, help="default benchmarks/results/quality_<dataset>.json")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    from flows.cli import parse_pairs

    root = args.root.resolve()
    if args.model is not None:
        if args.data is None:
            p.error("--model needs --data data/<dataset>")
        path = evaluate_now(args.model, args.data, root, parse_pairs(args.overrides), args.report_dir)
    elif args.run_dir is not None:
        path = report_in(args.run_dir)
    else:
        path = newest_report(root / "runs", args.dataset, args.profile)
    report = json.loads(path.read_text(encoding="utf-8"))
    dataset, tasks = report["dataset"], list(report["tasks"])
    rows = rows_of(report)
    summary = verdict(rows, tasks)
    seeds = len(report["settings"]["seeds"])
    auc_table, ks_table = markdown(rows, tasks, "auc"), markdown(rows, tasks, "ks")
    print(f"{dataset}: `{report['model_dir']}` on {report['n_probe_users']} probe users, {seeds} seeds "
          f"(report {path})\n")  # fmt: skip
    print(auc_table, "", ks_table, "", summary["line"], sep="\n")
    out = args.out or ROOT / "benchmarks" / "results" / f"quality_{dataset}.json"
    plotted = None
    if not args.no_plot:
        title = f"{dataset}: probe AUC, {seeds} seeds ({Path(report['model_dir']).parent.name})"
        plotted = plot(rows, tasks, title, out.with_suffix(".png")).name
    result = {
        "benchmark": "quality",
        "machine": machine(),
        "command": shlex.join(["python", "benchmarks/quality.py", *(sys.argv[1:] if argv is None else argv)]),
        "dataset": dataset,
        "report": str(path),
        "run_dir": str(path.parent.parent),
        "model_dir": report["model_dir"],
        "n_probe_users": report["n_probe_users"],
        "seeds": seeds,
        "gate": {"passed": report["gate"]["passed"], "variant": report["gate"]["variant"]},
        "tasks": tasks,
        "rows": rows,
        "summary": summary,
        "tables": {"auc": auc_table, "ks": ks_table},
        "plot": plotted,
    }
    write_result(out, result)
    return result


if __name__ == "__main__":
    main()
