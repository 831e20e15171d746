"""The evaluation report a reviewer reads before promoting a model: JSON, markdown and plots.

    files = write_report(result, run_dir / "evaluation")     # report.json, report.md, *.png

`report.json`'s top-level keys are a contract other components read (the registry, the CLI):

- "gate": {"passed": bool, "reasons": [str], "variant": str, "notes": [str]}
- "headline": {"mean_auc_universal", "mean_auc_manual", "mean_auc_tuned" (null when not run),
  "best_baseline", "best_baseline_mean_auc", "gate_variant", "gate_variant_mean_auc"}
- "tasks": {task: {variant: {"auc", "auc_std", "ks", "ks_std", "C", "n_fit", "n_eval", "n_seeds"}}}
- "baselines": {name: {task: {same fields}}}
- "seconds": {stage: seconds}
plus "candidate" (the gated variant's per-task AUCs: what a later champion comparison reads),
"losses_to_baselines", "tuning", "baseline_cached", "settings", "plots".
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from components.evaluation.evaluate import EvaluationResult
from components.evaluation.probe import ProbeScore

REPORT_JSON, REPORT_MD = "report.json", "report.md"
# named after the report's stem, so whoever ships `report.json` finds its siblings by `report*`
PLOT_FILES = {
    "tsne": "report_tsne.png",
    "roc": "report_roc.png",
    "s2sched": "report_s2sched_ratios.png",
    "routing": "report_tmole_routing.png",
}


def _score(s: ProbeScore) -> dict:
    return {k: s.to_dict()[k] for k in ("auc", "auc_std", "ks", "ks_std", "C", "n_fit", "n_eval", "n_seeds")}


def _mean(by_task: dict[str, ProbeScore]) -> float | None:
    return float(np.mean([s.auc for s in by_task.values()])) if by_task else None


def losses_to_baselines(result: EvaluationResult) -> list[dict]:
    """Per task where a baseline's AUC beats the best variant's: who, by how much."""
    out = []
    for t in result.tasks:
        ours = {v: s[t].auc for v, s in result.variants.items() if t in s}
        theirs = {b: s[t].auc for b, s in result.baselines.items() if t in s}
        if not ours or not theirs:
            continue
        v, b = max(ours, key=ours.get), max(theirs, key=theirs.get)
        if theirs[b] > ours[v]:
            out.append({"task": t, "baseline": b, "baseline_auc": theirs[b], "variant": v,
                        "variant_auc": ours[v], "gap": theirs[b] - ours[v]})  # fmt: skip
    return out


def report_dict(result: EvaluationResult, plots: dict[str, str] | None = None) -> dict:
    """The JSON report (see the module docstring for its keys)."""
    means = {v: _mean(result.variants.get(v, {})) for v in ("universal", "manual", "tuned")}
    base_means = {b: _mean(s) for b, s in result.baselines.items() if s}
    best = max(base_means, key=base_means.get) if base_means else None
    gated = result.verdict.variant
    return {
        "dataset": result.dataset,
        "model_dir": result.model_dir,
        "model_digest": result.model_digest,
        "n_probe_users": result.n_probe_users,
        "gate": result.verdict.to_dict(),
        "headline": {
            "mean_auc_universal": means["universal"],
            "mean_auc_manual": means["manual"],
            "mean_auc_tuned": means["tuned"],
            "best_baseline": best,
            "best_baseline_mean_auc": base_means.get(best) if best else None,
            "gate_variant": gated or None,
            "gate_variant_mean_auc": means.get(gated) if gated else None,
        },
        "candidate": {
            "variant": gated or None,
            "task_auc": {t: s.auc for t, s in result.variants.get(gated, {}).items()},
        },
        "tasks": {t: {v: _score(s[t]) for v, s in result.variants.items() if t in s} for t in result.tasks},
        "baselines": {b: {t: _score(x) for t, x in s.items()} for b, s in result.baselines.items()},
        "losses_to_baselines": losses_to_baselines(result),
        "tuning": {
            "users_per_task": {t: len(u) for t, u in result.tuning_users.items()},
            "loss_first_last": {t: [x[0], x[-1]] for t, x in result.tuning_losses.items() if x},
        },
        "baseline_cached": result.baseline_cached,
        "settings": result.settings,
        "seconds": result.seconds,
        "plots": plots or {},
    }


def _cell(s: ProbeScore | None) -> str:
    return "" if s is None else f"{s.auc:.3f} ± {s.auc_std:.3f} / {s.ks:.3f} ± {s.ks_std:.3f}"


def table(result: EvaluationResult) -> str:
    """Markdown: tasks x (variants, then baselines), cells `AUC ± std / KS ± std`, then the means."""
    cols = [*result.variants, *result.baselines]
    scores = {**result.variants, **result.baselines}
    lines = ["| task | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for t in result.tasks:
        lines.append(f"| {t} | " + " | ".join(_cell(scores[c].get(t)) for c in cols) + " |")
    mean_cells = []
    for c in cols:
        m = _mean(scores[c])
        ks = float(np.mean([s.ks for s in scores[c].values()])) if scores[c] else None
        mean_cells.append("" if m is None else f"**{m:.3f}** / {ks:.3f}")
    lines.append("| **mean** | " + " | ".join(mean_cells) + " |")
    return "\n".join(lines)


def markdown(report: dict, result: EvaluationResult) -> str:
    gate, head = report["gate"], report["headline"]
    verdict = "PASSED" if gate["passed"] else "FAILED"
    lines = [
        f"# Evaluation of `{result.model_dir}` on {result.dataset}",
        "",
        f"**Gate: {verdict}** (judged variant: {gate['variant'] or 'none'})",
        "",
        *[f"- {r}" for r in gate["reasons"]],
        *[f"- ok: {n}" for n in gate["notes"]],
        "",
        f"Linear probes on {result.n_probe_users} probe users: logistic regression with C chosen by "
        f"{result.settings['folds']}-fold cross-validation on the fitting half, "
        f"{int(result.settings['fit_fraction'] * 100)}% fitting / evaluation halves, "
        f"{len(result.settings['seeds'])} seeds; cells are AUC ± std / KS ± std. Every variant and "
        "baseline of a task is probed on the same halves; the tuned variant's few-shot users are in "
        "every fitting half.",
        "",
        table(result),
        "",
        f"Best baseline: {head['best_baseline']} (mean AUC {_fmt(head['best_baseline_mean_auc'])}); "
        f"universal {_fmt(head['mean_auc_universal'])}, manual {_fmt(head['mean_auc_manual'])}, "
        f"tuned {_fmt(head['mean_auc_tuned'])}.",
        "",
        "## Where the model loses to a baseline",
        "",
    ]
    losses = report["losses_to_baselines"]
    if not losses:
        lines.append("Nowhere: on every task the best variant reaches the best baseline.")
    for x in losses:
        lines.append(
            f"- {x['task']}: {x['baseline']} {x['baseline_auc']:.3f} > {x['variant']} "
            f"{x['variant_auc']:.3f} (by {x['gap']:.3f})"
        )
    lines += ["", "## Time", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["seconds"].items()]
    cached = ", ".join(f"{k}: {'cache' if v else 'computed'}" for k, v in result.baseline_cached.items())
    lines += ["", f"Baseline features: {cached or 'none'}.", ""]
    if report["plots"]:
        lines += ["## Plots", ""] + [f"![{k}]({v})" for k, v in report["plots"].items()]
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_report(result: EvaluationResult, folder: Path, plots: bool = True) -> dict:
    """Write `report.json`, `report.md` and the plots into `folder`; returns the JSON report."""
    from components.common import write_text
    from components.evaluation import plots as P

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if plots:
        t0 = time.perf_counter()
        every = {**result.variants, **result.baselines}
        made = {
            "tsne": P.plot_tsne(result.embeddings, result.labels, result.tasks, folder / PLOT_FILES["tsne"]),
            "roc": P.plot_roc(every, result.tasks, folder / PLOT_FILES["roc"]),
            "s2sched": P.plot_s2sched(result.s2sched or {}, folder / PLOT_FILES["s2sched"]),
            "routing": P.plot_routing(result.routing, folder / PLOT_FILES["routing"]),
        }
        written = {k: p.name for k, p in made.items() if p is not None}
        result.seconds["plots"] = round(time.perf_counter() - t0, 2)
    report = report_dict(result, written)
    write_text(folder / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    write_text(folder / REPORT_MD, markdown(report, result))
    return report
