"""Ablations: InstructUE Table 3 and RecFound Table 4 on this platform, one retraining-flow run per switch.

    python benchmarks/ablations.py --list                     # the variants and their overrides
    python benchmarks/ablations.py                            # all of them: quick profile, movielens-100k
    python benchmarks/ablations.py --table 4 --set steps=20   # Table 4 only, a shorter study
    python benchmarks/ablations.py --only no_tabular,no_ntp   # some variants (and `full`, the reference)

Each variant is `flows.retrain.retrain_flow` on the profile with the variant's `key=value` overrides
(after any `--set`), `register_model=False`: ingest, synthesise, train (its own run folder
`runs/<dataset>-<profile>-<key>/`), merge and select, evaluate on the dataset's probe tasks
(universal, manual and tuned instructions). The gate is switched off for the study (floor 0, no
baseline or champion check): an ablation wants the numbers, and the flow then returns every step's
record. `full` always runs first: it is every row's reference.

Resuming: the flow caches each step by its inputs' content, so a finished variant re-runs in seconds
(its steps report `Cached`) and a killed one resumes from its newest training checkpoint. The JSON is
rewritten after every variant, so a killed study keeps its finished rows; rows of an earlier call with
the same `--set` are kept too. `no_merge` shares `full`'s training run (merging does not change
training), so it costs a merge-and-select and an evaluation only.

Cost, quick profile on the 2-core CPU (Intel Xeon host of 2026-12-01, fp32): training 14-25 min, merge and
selection 4-6 min, evaluation 6-8 min per variant (more when other jobs share the cores), so about
6-7 hours for all eleven; a cached variant takes seconds, one that shares `full`'s training (no_merge)
a merge and an evaluation. On an AMD EPYC host with AVX2 only (2026-12-02) each step took about 2x
longer: training 30-33 min, merge 8-11, evaluation 15 (28 when the baselines are not cached).
`text_only` trains with activation checkpointing (it does not fit in 24 GiB without) at about 137 s a
step on the AMD host: about 2.3 hours of training alone, 3.5-4 hours for the variant, more than a
session there, whose `runs/` may not survive it (see VARIANTS).

Output: two tables (Table 3 and Table 4 analogues: mean AUC over the tasks per embedding variant,
their mean, and the difference to `full`) and `benchmarks/results/ablations_<dataset>_<profile>.json`
with the command, the machine of the last call, and per variant the machine it ran on, its
overrides, run folder, winner, step states and seconds, wall time and per-task AUC/KS; beside it a
PNG of the mean AUCs against `full` and the best baseline (`--plot-only` redraws it from the JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import machine, portable, save_figure

ROOT = Path(__file__).resolve().parents[1]
EMBEDDINGS = ("universal", "manual", "tuned")
# the study wants every variant's numbers: nothing fails the gate (AUC >= 0, no baseline or champion check)
GATE_OFF = {"gate.auc_floor": 0.0, "gate.task_floors": {}, "gate.beat_best_baseline": False,
            "gate.champion_tolerance": 1.0}  # fmt: skip
FULL = "full"

log = logging.getLogger("ablations")


@dataclass(frozen=True)
class Variant:
    name: str
    table: int | None  # 3 (InstructUE), 4 (RecFound); None: the reference of both
    paper_row: str
    overrides: tuple[str, ...]


VARIANTS = (
    Variant(FULL, None, "full model", ()),
    # Text only at 256 tokens per source, not the model's 1024: measured 2026-12-01 on this CPU (16
    # users, quick backbone, fp32), a 1024-token user block embeds 25x slower than the multi-encoder
    # input (63 s against 2.5 s), so the variant would train for about 6 hours; at 256 it is 5.4x
    # (13 s), about 2.5 hours for the whole variant. A MovieLens rating is about 28 tokens as text, so
    # the block holds the ~9 most recent ratings where the encoders read 64: the row measures text
    # input under a budget this machine can train, which is the paper's point about text-only input.
    # Training it keeps every layer's activations of 16 + 8 sequences (up to 256 tokens of ratings as
    # text, plus the tabular text, the instruction and the answer): over the 24 GiB of this VM
    # (2026-12-02, the AMD host: 23 GB resident and swapping before its first step ended). With
    # activation checkpointing its peak RSS was 5.8 GB and a step took 136-138 s there after a first
    # of 386 s (3 steps; the same gradients: tests/training/test_trainer.py), so the variant takes
    # 3.5-4 hours there, not the 2.5 the embedding timings suggested.
    Variant(
        "text_only",
        3,
        "Text only (256 tokens)",
        # answers through the backbone's states: text input loads no sentence encoder for LiT
        (
            "model.input_mode=text_only",
            "model.max_text_tokens=256",
            "model.gradient_checkpointing=true",
            "model.answer_encoder=false",
            "model.mean_skip=false",  # no event vectors to skip with
        ),
    ),  # fmt: skip
    Variant("no_sequences", 3, "w/o sequences", ("model.inputs=tabular", "model.mean_skip=false")),
    Variant("no_tabular", 3, "w/o tabular", ("model.inputs=sequences",)),
    # The quick profile trains without the next-token loss since issue 26 (README "Training"): there
    # `no_ntp` is `full` itself, and `no_contrastive` turns the next-token loss back on, else nothing
    # would be left to train.
    Variant("no_ntp", 3, "w/o next-token loss", ("no_ntp=true",)),
    Variant("no_contrastive", 3, "w/o contrastive loss", ("no_contrastive=true", "no_ntp=false")),
    Variant("mean_pooling", 3, "average pooling instead of <USER>", ("model.pooling=mean",)),
    Variant("no_merge", 4, "w/o Model Merge", ("merge.enabled=false",)),
    Variant("no_s2sched", 4, "w/o S2Sched", ("scheduling=uniform", "task_batches=null")),
    Variant("no_tmole", 4, "w/o TMoLE", ("tuner=lora",)),
    Variant(
        "no_all_three",
        4,
        "w/o all three",
        ("merge.enabled=false", "scheduling=uniform", "task_batches=null", "tuner=lora"),
    ),  # fmt: skip
)
BY_NAME = {v.name: v for v in VARIANTS}


def select(table: str = "all", only: list[str] | None = None) -> list[Variant]:
    """The variants to run, `full` first: those of `table` (3, 4 or all), or the ones named."""
    if only:
        unknown = [n for n in only if n not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}: choose from {', '.join(BY_NAME)} (see --list)")
        return [BY_NAME[FULL], *(BY_NAME[n] for n in dict.fromkeys(only) if n != FULL)]
    if table not in ("3", "4", "all"):
        raise ValueError(f"--table {table!r}: give 3, 4 or all")
    return [v for v in VARIANTS if v.table is None or table == "all" or str(v.table) == table]


def validate_overrides(profile: str, extra: list[str], variants: list[Variant]) -> None:
    """Every variant's configuration, checked before the first (long) run; all problems in one message."""
    from components.run_config import load_run
    from components.training import ConfigError

    problems = []
    for v in variants:
        try:
            load_run(profile, [*extra, *v.overrides])
        except ConfigError as e:
            problems.append(f"{v.name}: {e}")
    if problems:
        raise ValueError("invalid ablation configuration:\n" + "\n".join(problems))


def config_digest(
    profile: str, overrides: list[str], dataset: str = "movielens-100k", evaluation: dict | None = None
) -> str:
    """The digest of what a row measured: the resolved training configuration and the evaluation
    settings (gate aside). A row run under an earlier version of either (the same `--set`, other
    defaults) does not compare with this one's rows."""
    from components.run_config import load_run
    from flows.evaluate import build_settings

    run = load_run(profile, overrides)
    resolved = {  # the training section with the merge settings inside, as before they were split
        "train": {**run.train.model_dump(mode="json"), "merge": run.merge.model_dump(mode="json")},
        "evaluation": build_settings(ROOT, dataset, {**GATE_OFF, **(evaluation or {})}).model_dump(
            mode="json", exclude={"gate", "progress"}
        ),
    }
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode("utf-8")).hexdigest()[:16]


# -- one variant -----------------------------------------------------------------------------------
def _means(headline: dict) -> dict[str, float | None]:
    means = {k: headline.get(f"mean_auc_{k}") for k in EMBEDDINGS}
    present = [x for x in means.values() if x is not None]
    return {**means, "mean": sum(present) / len(present) if present else None}


def _tasks(report_file: Path, winner: Path) -> dict | None:
    """Per task and embedding: AUC and KS (with their spread over seeds), from the winner's report.

    Variants that differ only in merge settings share a run folder and so its `evaluation/report.json`;
    on a cached re-run the file may be the other variant's, which its `model_dir` tells (None then).
    """
    if not report_file.is_file():
        return None
    report = json.loads(report_file.read_text(encoding="utf-8"))
    if Path(report.get("model_dir", "")).resolve() != winner.resolve():
        return None
    keys = ("auc", "auc_std", "ks", "ks_std")
    return {t: {e: {k: s[k] for k in keys} for e, s in by.items()} for t, by in report["tasks"].items()}


def run_variant(
    variant: Variant,
    dataset: str,
    profile: str,
    extra: list[str],
    *,
    root: str | None = None,
    options: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    previous: dict | None = None,
) -> dict:
    """One variant through the retraining flow; its row of the study (`error` set when it failed)."""
    from flows.retrain import GateFailedError, retrain_flow

    overrides = [*extra, *variant.overrides]
    row: dict[str, Any] = {"variant": variant.name, "table": variant.table, "paper_row": variant.paper_row,
                           "extra": list(extra), "overrides": overrides,
                           "config": config_digest(profile, overrides, dataset, evaluation),
                           # per row: a study spans sessions, and their hosts differ (speed, not AUC)
                           "machine": machine(), "error": None}  # fmt: skip
    t0 = time.perf_counter()
    try:
        out = retrain_flow(dataset=dataset, profile=profile, overrides=overrides, options=options,
                           root=root, register_model=False,
                           evaluation={**GATE_OFF, **(evaluation or {})})  # fmt: skip
    except GateFailedError as e:  # only with a gate put back through `evaluation`
        return row | {"error": f"gate failed: {e}", "wall_s": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # one broken variant does not end a study of hours
        log.exception("variant %s failed", variant.name)
        return row | {"error": f"{type(e).__name__}: {e}", "wall_s": round(time.perf_counter() - t0, 1)}
    selection, evaluation_out = out["selection"], out["evaluation"]
    winner = Path(selection["folders"][selection["winner"]])
    tasks = _tasks(Path(evaluation_out["folder"]) / "report.json", winner)
    if tasks is None and previous and previous.get("config") == row["config"]:
        tasks = previous.get("tasks")  # this variant's own numbers, kept from an earlier call
    headline = evaluation_out["headline"]
    return row | {
        "run_dir": out["train"]["run_dir"],
        "winner": selection["winner"],
        "winner_dir": str(winner),
        "validation_scores": selection["scores"],
        "states": out["states"],
        "seconds": out["seconds"],  # this call's, per step: near zero for a cached step
        "wall_s": round(time.perf_counter() - t0, 1),
        "train_wall_s": out["train"].get("wall_s"),  # what training took when it ran
        "evaluation_seconds": evaluation_out.get("seconds"),
        "mean_auc": _means(headline),
        "best_baseline": headline.get("best_baseline"),
        "best_baseline_mean_auc": headline.get("best_baseline_mean_auc"),
        "tasks": tasks,
    }


# -- tables ----------------------------------------------------------------------------------------
def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def line(row: dict, full: dict | None) -> str:
    """One variant, as printed when it finishes."""
    if row.get("error"):
        return f"{row['variant']:<15} FAILED after {row.get('wall_s', 0):.0f} s: {row['error']}"
    m = row["mean_auc"]
    delta = _delta(row, full, "mean")
    cells = " ".join(f"{k} {_fmt(m[k])}" for k in (*EMBEDDINGS, "mean"))
    states = ",".join(f"{k}={v}" for k, v in row["states"].items() if k in ("train", "merge", "evaluate"))
    return (f"{row['variant']:<15} {cells}  delta {_fmt(delta, True)}  [{states}]  "
            f"{row['wall_s']:.0f} s  {row['run_dir']}")  # fmt: skip


def _delta(row: dict, full: dict | None, key: str) -> float | None:
    if not full or full.get("error") or row.get("error"):
        return None
    a, b = row["mean_auc"].get(key), full["mean_auc"].get(key)
    return None if a is None or b is None else a - b


def table(rows: list[dict], which: int) -> str:
    """Markdown: the reference and the table's variants; mean AUC over the tasks and the change."""
    full = next((r for r in rows if r["variant"] == FULL), None)
    cols = [*EMBEDDINGS, "mean"]
    out = [
        f"Table {which} analogue ({'InstructUE' if which == 3 else 'RecFound'}): mean AUC over the tasks",
        "| variant | paper row | " + " | ".join(cols) + " | " + " | ".join(f"delta {c}" for c in cols) + " |",
        "|---|---|" + "---:|" * (2 * len(cols)),
    ]
    for r in rows:
        if r["table"] not in (None, which):
            continue
        if r.get("error"):
            out.append(f"| {r['variant']} | {r['paper_row']} | failed: {r['error'][:60]} |")
            continue
        vals = " | ".join(_fmt(r["mean_auc"][c]) for c in cols)
        deltas = " | ".join(_fmt(_delta(r, full, c), True) for c in cols)
        out.append(f"| {r['variant']} | {r['paper_row']} | {vals} | {deltas} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path, dataset: str, profile: str) -> Path | None:
    """Horizontal bars: each finished variant's mean AUC per embedding, `full`'s mean and the best
    baseline's as vertical lines (the gate's bar), chance at 0.5. None when no row has numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if not r.get("error") and r.get("mean_auc")]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(done) + 1.6))
    height = 0.8 / len(EMBEDDINGS)
    for j, emb in enumerate(EMBEDDINGS):
        ys = [i + (j - 1) * height for i in range(len(done))]
        xs = [r["mean_auc"].get(emb) or float("nan") for r in done]
        ax.barh(ys, xs, height=height, label=emb)
    full = next((r for r in done if r["variant"] == FULL), None)
    if full and full["mean_auc"].get("mean") is not None:
        ax.axvline(full["mean_auc"]["mean"], color="black", lw=1, ls="--", label="full (mean)")
    best = max(done, key=lambda r: r.get("best_baseline_mean_auc") or 0.0)
    baselines = [best["best_baseline_mean_auc"]] if best.get("best_baseline_mean_auc") else []
    if baselines:
        label = f"best baseline ({best['best_baseline']})"
        ax.axvline(baselines[0], color="tab:red", lw=1, label=label)
    ax.set_yticks(range(len(done)), [f"{r['variant']} (T{r['table'] or '3+4'})" for r in done])
    ax.invert_yaxis()
    lo = min(0.5, *(x for r in done for x in r["mean_auc"].values() if x is not None)) - 0.02
    ax.set_xlim(lo, max(0.75, *baselines) if baselines else 0.75)
    ax.axvline(0.5, color="grey", lw=0.8)
    ax.set_xlabel("mean AUC over the probe tasks")
    ax.set_title(f"ablations: {dataset}, {profile} profile", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_figure(fig, path)


# -- the study -------------------------------------------------------------------------------------
def default_out(dataset: str, profile: str) -> Path:
    return ROOT / "benchmarks" / "results" / f"ablations_{dataset}_{Path(profile).stem}.json"


def _write(path: Path, payload: dict) -> None:
    from components.common import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    # committed: run folders are written from `runs/` on, never as this machine's absolute paths
    write_bytes_atomic(path, (json.dumps(portable(payload), indent=2) + "\n").encode("utf-8"))


def finished(row: dict | None, overrides: list[str], config: str) -> bool:
    """Is `row` (from the JSON) a finished run of exactly these overrides and this configuration?"""
    return (
        bool(row)
        and not row.get("error")
        and row.get("overrides") == overrides
        and row.get("config") == config
        and bool(row.get("mean_auc"))
    )


def run_study(
    variants: list[Variant],
    dataset: str = "movielens-100k",
    profile: str = "quick",
    extra: list[str] | None = None,
    out: Path | None = None,
    *,
    command: str = "",
    root: str | None = None,
    options: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    keep_finished: bool = False,
) -> dict:
    """Run the variants in order, rewriting the JSON after each; returns what was written.

    `keep_finished`: a variant whose row is already in the JSON (same `--set`, same overrides, no
    error) is not run again, `full` included: a study spread over several sessions or machines, each
    adding rows to the committed JSON. Pin what differs between machines (`--set model.bf16=false`)
    so that such rows compare.

    `root` (the project folder: data, runs, MLflow; default this checkout), `options` (the dataset
    reader's) and `evaluation` (evaluation overrides, as `instructue evaluate --set`) are for tests
    and small studies.
    """
    extra = list(extra or [])
    out = Path(out) if out else default_out(dataset, profile)
    validate_overrides(profile, extra, variants)
    old = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    same_study = old.get("dataset") == dataset and old.get("profile") == profile
    kept = {r["variant"]: r for r in old.get("rows", []) if same_study and r.get("extra") == extra}
    wanted = {v.name for v in variants} | set(kept)
    digests = {  # what each variant's row must have measured, computed once
        v.name: config_digest(profile, [*extra, *v.overrides], dataset, evaluation)
        for v in VARIANTS
        if v.name in wanted
    }
    for name in [n for n in kept if kept[n].get("config") != digests.get(n)]:
        # the profile's or the evaluation's defaults changed since that row ran: unlike with unlike
        print(f"{name}: dropped from the JSON, it ran under another version of the profile or evaluation")
        del kept[name]
    payload = {"benchmark": "ablations", "dataset": dataset, "profile": profile, "extra": extra,
               "command": command, "machine": machine(), "evaluation": {**GATE_OFF, **(evaluation or {})},
               "rows": list(kept.values())}  # fmt: skip
    study_t0 = time.perf_counter()
    for v in variants:
        if keep_finished and finished(kept.get(v.name), [*extra, *v.overrides], digests[v.name]):
            print(line(kept[v.name], kept.get(FULL)) + "  (kept from the JSON)", flush=True)
            continue
        row = run_variant(v, dataset, profile, extra, root=root, options=options, evaluation=evaluation,
                          previous=kept.get(v.name))  # fmt: skip
        kept[v.name] = row
        order = [x.name for x in VARIANTS]
        payload["rows"] = sorted(kept.values(), key=lambda r: order.index(r["variant"]))
        payload["wall_s"] = round(time.perf_counter() - study_t0, 1)
        _write(out, payload)
        plot(payload["rows"], out.with_suffix(".png"), dataset, profile)
        print(line(row, kept.get(FULL)), flush=True)
    for which in (3, 4):
        if any(r["table"] == which for r in payload["rows"]):
            print("\n" + table(payload["rows"], which), flush=True)
    print(f"\nwritten to {out}")
    return payload


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick", help="run profile: tiny, quick, paper or a YAML file")
    p.add_argument("--dataset", default="movielens-100k")
    p.add_argument("--only", default="", help="comma-separated variant names (full is always run)")
    p.add_argument("--table", default="all", choices=["3", "4", "all"])
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="an override applied to every variant (repeatable), e.g. steps=20")  # fmt: skip
    p.add_argument("--keep-finished", action="store_true",
                   help="skip variants finished in the JSON (a study over sessions)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="print the variants and their overrides, run nothing")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw the PNG and print the tables from the JSON, run nothing")  # fmt: skip
    args = p.parse_args(argv)
    if args.plot_only:
        out = args.out or default_out(args.dataset, args.profile)
        if not out.is_file():
            p.error(f"{out} does not exist: run the study first")
        rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
        for which in (3, 4):
            print("\n" + table(rows, which))
        drawn = plot(rows, out.with_suffix(".png"), args.dataset, args.profile)
        print(f"\nplot: {drawn}" if drawn else "\nno finished row to plot")
        return 0
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    try:
        variants = select(args.table, only)
    except ValueError as e:
        p.error(str(e))
    if args.list:
        for v in variants:
            which = "3+4" if v.table is None else str(v.table)
            overrides = " ".join([*args.extra, *v.overrides])
            print(f"{v.name:<15} table {which:<4} {v.paper_row:<36} {overrides}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = " ".join(["python", "benchmarks/ablations.py", *argv])
    payload = run_study(variants, args.dataset, args.profile, args.extra, args.out, command=command,
                        keep_finished=args.keep_finished)  # fmt: skip
    return 1 if any(r.get("error") for r in payload["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
