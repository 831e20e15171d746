"""`instructue retrain | deploy`: the retraining pipeline, now or on a schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import app, fail, parse_pairs, user_errors
from flows.cli.options import RootOption


@app.command()
def retrain(
    dataset: Annotated[
        str, typer.Option(help="a dataset reader (see `instructue datasets`)")
    ] = "movielens-100k",
    profile: Annotated[str, typer.Option(help="tiny, quick, paper, or a YAML file")] = "quick",
    cfg: Annotated[list[str], typer.Option("--set", help="profile override key=value (repeatable)")] = [],  # noqa: B006
    option: Annotated[list[str], typer.Option("-o", "--option", help="reader option key=value")] = [],  # noqa: B006
    register: Annotated[bool, typer.Option(help="register the model when its gate passes")] = True,
    track: Annotated[bool, typer.Option(help="log training to MLflow")] = True,
    refresh: Annotated[bool, typer.Option(help="run every step again, ignoring the cache")] = False,
    eval_set: Annotated[
        list[str], typer.Option("--eval-set", help="evaluation setting key=value, e.g. tuning.steps=10")
    ] = [],  # noqa: B006
    root: RootOption = None,
) -> None:
    """The retraining pipeline: ingest, validate, version, synthesize, train, merge, evaluate, gate,
    register. Finished steps with unchanged inputs are skipped."""
    from components.run_config import load_run
    from flows.logs import tidy_cli_logs
    from flows.retrain import GateFailedError, retrain_flow

    try:
        config = load_run(profile, cfg)  # read once: a bad profile fails here, before any step
        options, evaluation = parse_pairs(option), parse_pairs(eval_set)
    except user_errors() as e:
        raise fail(str(e)) from None
    tidy_cli_logs(user_errors())
    from flows.shutdown import guard_cli_run

    guard_cli_run()
    state = retrain_flow(dataset=dataset, profile=profile, overrides=cfg, options=options,
                         root=str(root) if root else None, register_model=register, track=track,
                         refresh=refresh, evaluation=evaluation, config=config.model_dump(mode="json"),
                         return_state=True)  # fmt: skip
    try:
        out = state.result()
    except GateFailedError as e:
        typer.secho(f"gate FAILED, nothing registered: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    except user_errors() as e:
        raise fail(str(e)) from None
    ev = out["evaluation"]
    typer.echo("")
    typer.echo(ev["table"])
    typer.echo("")
    typer.echo("step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in out["seconds"].items()))
    sel = out["selection"]
    typer.echo(
        f"merge: {sel['winner']} won the validation probe ({sel['margin_over_final']:+.4f} over final)"
    )
    typer.echo(f"gate: PASSED; report in {ev['folder']}")
    reg = out.get("registered")
    if reg:
        typer.echo(f"registered {reg['name']} version {reg['version']} (alias challenger)")
        typer.echo(f"promote it:  instructue promote --model {reg['name']} --version {reg['version']} "
                   '--reason "<why>"')  # fmt: skip


@app.command()
def deploy(
    pool: Annotated[str | None, typer.Option(help="work pool (process pools are created)")] = None,
    cron: Annotated[str | None, typer.Option(help="cron schedule, e.g. '0 3 * * 1'")] = None,
    profile: Annotated[str | None, typer.Option(help="profile parameter: tiny, quick, paper")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset parameter")] = None,
    cfg: Annotated[list[str], typer.Option("--set", help="training override key=value (repeatable)")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option(help="other flow parameter key=value (YAML value)")] = [],  # noqa: B006
    entrypoint: Annotated[str | None, typer.Option(help="flow as path/to/file.py:function")] = None,
    name: Annotated[str, typer.Option(help="deployment entry of prefect.yaml to start from")] = "weekly",
    deployment_name: Annotated[str | None, typer.Option(help="register under this name instead")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone of the cron schedule")] = None,
    paused: Annotated[bool | None, typer.Option("--paused/--active", help="schedule paused")] = None,
    source: Annotated[Path | None, typer.Option(help="code folder for the worker (default: root)")] = None,
    prefect_file: Annotated[Path | None, typer.Option(help="default: <root>/prefect.yaml")] = None,
    root: RootOption = None,
) -> None:
    """Register the retraining flow on a cron schedule with a Prefect server (needs PREFECT_API_URL)."""
    from flows.deploy import PREFECT_FILE, DeployError, deploy, load_spec
    from flows.settings import Paths

    project = Paths.resolve(root).root
    try:
        spec = load_spec(prefect_file or project / PREFECT_FILE, name).with_options(
            name=deployment_name, pool=pool, cron=cron, timezone=timezone, entrypoint=entrypoint,
            paused=paused, dataset=dataset, profile=profile, overrides=cfg or None, params=parse_pairs(param),
        )  # fmt: skip
        deployed = deploy(spec, source or project)
    except (DeployError, ValueError) as e:
        raise fail(str(e)) from None
    state = " (paused)" if spec.paused else ""
    typer.echo(f"deployment {deployed.full_name!r} ({deployed.id}) of {spec.entrypoint}")
    typer.echo(f"schedule: {spec.cron} {spec.timezone}{state}; work pool: {spec.pool}")
    typer.echo(f"parameters: {spec.parameters}")
    typer.echo(f"start a worker: prefect worker start --pool {spec.pool}")
    typer.echo(f"run it now:     prefect deployment run '{deployed.full_name}'")
