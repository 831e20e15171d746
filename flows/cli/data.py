"""`instructue datasets | ingest | synthesize`: data in, validated, versioned; UserQA for training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import app, fail, parse_pairs, run_flow, user_errors
from flows.cli.options import DaskAddressOption, RootOption, WorkersOption


@app.command()
def datasets() -> None:
    """List the dataset readers and their options."""
    from components.ingestion import READERS

    for spec in READERS.values():
        typer.echo(f"{spec.name:<24}{spec.summary}")
        for name, field in spec.options.model_fields.items():
            default = "required" if field.is_required() else f"default {field.default!r}"
            typer.echo(f"{'':<28}{name} ({default})")


@app.command()
def ingest(
    dataset: Annotated[
        str, typer.Argument(help="reader name: movielens-100k, synthetic-multisource, parquet")
    ],
    opt: Annotated[list[str], typer.Option("--opt", "-o", help="reader option key=value (repeatable)")] = [],  # noqa: B006
    max_bad_share: Annotated[float, typer.Option(help="stop if more than this share of rows is bad")] = 0.05,
    version: Annotated[bool, typer.Option(help="version data/ with DVC after publishing")] = True,
    commit: Annotated[bool, typer.Option(help="git-commit the new data.dvc (records the version)")] = False,
    push: Annotated[bool, typer.Option(help="push the new data version to the default DVC remote")] = True,
    root: RootOption = None,
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary as JSON here")] = None,
) -> None:
    """Ingest a dataset: read, validate (bad rows to quarantine/), publish data/<name>/, version."""
    from components.ingestion import parse_options

    try:
        options = parse_pairs(opt)
        parse_options(dataset, options)  # fail fast, before any flow starts
    except user_errors() as e:
        raise fail(str(e)) from None

    from flows.ingest import ingest_flow
    from flows.logs import tidy_cli_logs

    tidy_cli_logs(user_errors())
    summary, data_version = run_flow(
        ingest_flow,
        dataset=dataset,
        options=options,
        root=str(root) if root else None,
        max_bad_share=max_bad_share,
        version=version,
        commit=commit,
        push=push,
    )
    typer.echo("")
    typer.echo(summary.to_text())
    if data_version is not None:
        typer.echo(f"data version: {data_version}")
        if not commit:
            typer.echo("record it with: git add data.dvc && git commit -m 'data: ...' (or pass --commit)")
        if push:
            typer.echo("pushed to the default DVC remote: `dvc pull` in another clone restores it")
        else:
            typer.echo("share it with: instructue data push")
    if summary_json:
        summary_json.write_text(summary.to_json() + "\n", encoding="utf-8")


@app.command()
def synthesize(
    dataset: Annotated[str, typer.Argument(help="an ingested dataset under data/")],
    writer: Annotated[
        str, typer.Option(help="template, local (a local LLM) or endpoint (OpenAI-compatible)")
    ] = "template",
    opt: Annotated[list[str], typer.Option("--opt", "-o", help="writer option key=value (repeatable)")] = [],  # noqa: B006
    cfg: Annotated[
        list[str], typer.Option("--set", help="synthesis setting key=value, e.g. paraphrases_per_user=4")
    ] = [],  # noqa: B006
    version: Annotated[bool, typer.Option(help="version data/ with DVC afterwards")] = True,
    workers: WorkersOption = None,
    dask_address: DaskAddressOption = None,
    root: RootOption = None,
) -> None:
    """Synthesise UserQA (instruction, answer) records for the dataset's training users.

    Users go in chunks (--set chunk_users=N); a re-run reuses the chunks already written."""
    from components.userqa import SynthesisConfig
    from flows.settings import Paths
    from flows.sharding import ShardRunner

    try:
        runner = ShardRunner.from_options(workers, dask_address)
        writer_options, settings = parse_pairs(opt), parse_pairs(cfg)
        SynthesisConfig.model_validate(settings)
        folder = Paths.resolve(root).data / dataset
        if not (folder / "events.parquet").exists():
            raise FileNotFoundError(
                f"dataset {dataset!r} is not ingested ({folder}); run `instructue ingest {dataset}`"
            )
        if writer not in ("template", "local", "endpoint"):
            raise ValueError(f"unknown writer {writer!r}; choose template, local or endpoint")
    except user_errors() as e:
        raise fail(str(e)) from None
    from flows.logs import tidy_cli_logs
    from flows.synthesize import synthesize_flow

    tidy_cli_logs(user_errors())
    typer.echo(f"synthesize on {runner.description}", err=True)
    summary, data_version = run_flow(
        runner.apply(synthesize_flow), dataset=dataset, writer=writer, writer_options=writer_options,
        config=settings, root=str(root) if root else None, version=version,
    )  # fmt: skip
    typer.echo("")
    typer.echo(summary.to_text())
    if data_version is not None:
        typer.echo(f"data version: {data_version}")
