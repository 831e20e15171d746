"""`instructue train | merge`: one training run, then TIES merging and checkpoint selection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import app, fail, run_flow, user_errors
from flows.cli.options import RootOption


@app.command()
def train(
    profile: Annotated[str, typer.Option(help="tiny, quick, paper, or a YAML file")] = "quick",
    dataset: Annotated[
        str, typer.Option(help="an ingested, synthesised dataset under data/")
    ] = "movielens-100k",
    cfg: Annotated[
        list[str], typer.Option("--set", help="override key=value, e.g. steps=50 or model.max_events=32")
    ] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="continue from the newest complete checkpoint")] = False,
    processes: Annotated[int, typer.Option(help="data-parallel processes (torchrun; gloo on CPUs)")] = 1,
    run_dir: Annotated[Path | None, typer.Option(help="default: runs/<dataset>-<profile>/")] = None,
    track: Annotated[bool, typer.Option(help="log to MLflow (mlruns_config/tracking.yaml)")] = True,
    root: RootOption = None,
) -> None:
    """Train an InstructUE model on UserQA (contrastive + next-token, LoRA); writes a model folder."""
    from components.training import USERQA_FILE, load_profile
    from flows.settings import Paths

    try:
        if processes < 1:
            raise ValueError(f"--processes must be >= 1, got {processes}")
        config = load_profile(profile, cfg)
        folder = Paths.resolve(root).data / dataset
        if not (folder / USERQA_FILE).exists():
            raise FileNotFoundError(
                f"{folder / USERQA_FILE} is missing: run `instructue ingest {dataset}` and "
                f"`instructue synthesize {dataset}` first"
            )
    except user_errors() as e:
        raise fail(str(e)) from None
    from flows.logs import tidy_cli_logs
    from flows.train import train_flow

    tidy_cli_logs(user_errors())
    result = run_flow(
        train_flow, dataset=dataset, profile=profile, overrides=cfg, resume=resume, processes=processes,
        run_dir=str(run_dir) if run_dir else None, track=track, root=str(root) if root else None,
    )  # fmt: skip
    losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["final"].items()))
    typer.echo("")
    rates = f"{result['examples_per_s']:.1f} examples/s, {result['tokens_per_s']:.0f} tokens/s"
    typer.echo(f"trained {config.profile} for {result['steps']} steps in {result['wall_s']:.0f} s ({rates})")
    typer.echo(f"final losses: {losses or 'n/a (resumed at the end)'}")
    if result.get("s2sched_s"):
        share = result["s2sched_s"] / max(result["wall_s"], 1e-9)
        typer.echo(f"S2Sched validation passes: {result['s2sched_s']:.0f} s ({share:.1%} of training)")
    if result.get("run_id"):
        typer.echo(f"MLflow run: {result['run_id']}")
    typer.echo(f"model folder: {result['model_dir']}")
    typer.echo(f"embed with:   instructue embed --dataset {dataset} --model {result['model_dir']}")


@app.command()
def merge(
    run: Annotated[Path, typer.Option(help="a training run folder (runs/<dataset>-<profile>)")],
    dataset: Annotated[str, typer.Option(help="the dataset the run trained on (validation probe)")] = (
        "movielens-100k"
    ),
    checkpoint: Annotated[
        list[Path], typer.Option(help="checkpoint folders to merge (repeatable); default: the last --last")
    ] = [],  # noqa: B006
    last: Annotated[int, typer.Option(help="merge the run's last K complete checkpoints")] = 2,
    density: Annotated[float, typer.Option(help="TIES: share of each task vector kept")] = 0.2,
    order: Annotated[
        str, typer.Option(help="trim_first (TIES paper) or elect_first (RecFound code)")
    ] = "trim_first",
    rank: Annotated[
        str | None,
        typer.Option(help="merged factors' rank: an integer, or 'full' (lossless); default: the tuner's r"),
    ] = None,
    select: Annotated[
        bool, typer.Option(help="score merged / final / best checkpoint on validation; keep the winner")
    ] = True,
    min_gain: Annotated[float, typer.Option(help="the merged model must win by more than this")] = 0.0,
    out: Annotated[Path | None, typer.Option(help="default: <run>/merged")] = None,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level)")] = None,
) -> None:
    """Merge checkpoints of one run with TIES, then keep the best of merged / final / best checkpoint
    on the validation probe (RecFound 4.4)."""
    from components.merging import MergeSettings, Order, merge_run
    from components.training import complete_checkpoints

    try:
        merge_rank = None if rank is None else rank if rank == "full" else int(rank)
        settings = MergeSettings(
            last=last, density=density, order=Order(order), rank=merge_rank, min_gain=min_gain
        )
        chosen = list(checkpoint) or complete_checkpoints(run)[-last:]
        if len(chosen) < 2:
            raise ValueError(f"{run}: merging needs at least 2 checkpoints, found {len(chosen)}")
        if not select:
            report = merge_run(run, chosen, out or run / "merged", density, Order(order), merge_rank)
            typer.echo(f"merged {len(report.checkpoints)} checkpoints (density {density}, {order}) into "
                       f"{out or run / 'merged'}; worst truncation error "
                       f"{report.max_truncation_error:.1%}")  # fmt: skip
            return
        from flows.merge import merge_and_select_flow

        selection = run_flow(merge_and_select_flow, run=run, dataset=dataset, settings=settings,
                             checkpoints=chosen, out=out, root=root)  # fmt: skip
    except (*user_errors(), KeyError) as e:
        raise fail(str(e)) from None
    typer.echo(selection.table())
    if selection.merge:
        worst = selection.merge["max_truncation_error"]
        typer.echo(f"merged {len(selection.merge['checkpoints'])} checkpoints (density {density}, {order}); "
                   f"worst rank-r truncation error {worst:.1%}")  # fmt: skip
    typer.echo(f"winner: {selection.winner} ({selection.margin_over_final:+.4f} over final) -> "
               f"{selection.winner_dir}")  # fmt: skip
    typer.echo(f"decision written to {run / 'selection.json'}")
