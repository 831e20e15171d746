"""`instructue register | promote | rollback | embed-batch | serve`: the MLflow registry side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import app, fail, run_flow, user_errors
from flows.cli.options import (
    BatchOption,
    DaskAddressOption,
    OutOption,
    RootOption,
    SplitOption,
    UniversalOption,
    WorkersOption,
)


def _registry(root: Path | None):
    """Project paths, registry settings and a client bound to the registry (no global MLflow state)."""
    from components.registry import RegistrySettings
    from flows.settings import Paths

    paths = Paths.resolve(root)
    settings = RegistrySettings.load(paths.root)
    return paths, settings, settings.client(paths.root)


def _registry_errors() -> tuple[type[BaseException], ...]:
    from components.modeling import AssetError, ModelFolderError
    from components.registry import RecordError, RegistryError

    return (*user_errors(), RegistryError, RecordError, AssetError, ModelFolderError, KeyError)


@app.command()
def register(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a model folder (model.json, weights)")],
    dataset: Annotated[str, typer.Option(help="the ingested dataset the model was trained on")],
    report: Annotated[
        Path | None, typer.Option(help="optional: must be the evaluation recorded for these weights")
    ] = None,
    override_reason: Annotated[
        str | None, typer.Option(help="register without a passed, recorded gate; recorded with who")
    ] = None,
    name: Annotated[str | None, typer.Option(help="registered model (default: registry.yaml's name)")] = None,
    root: RootOption = None,
) -> None:
    """Register a model folder whose recorded evaluation passed its gate, with alias `challenger`.

    The verdict is read from the evaluation MLflow holds for these exact weights (their sha256),
    never from a file you pass."""
    from components.registry import register as register_version
    from components.registry import whoami

    paths, settings, client = _registry(root)
    name = name or settings.name_for(dataset)
    try:
        done = register_version(
            client, settings.experiment_id(client, paths.root), model_dir=model_dir, report_path=report,
            dataset_dir=paths.data / dataset, name=name, root=paths.root,
            bundle_base_models=settings.bundle_base_models, override_reason=override_reason,
            me=whoami(client.tracking_uri),
        )  # fmt: skip
    except _registry_errors() as e:
        raise fail(str(e)) from None
    typer.echo(f"registered {done.name} version {done.version} (alias challenger; run {done.run_id})")
    typer.echo(f"promote with: instructue promote --model {done.name} --version {done.version} "
               "--reason '...'")  # fmt: skip


def _acting(client):
    """The acting user (`team.whoami`); on a local store one line says it is unauthenticated."""
    from components.registry import whoami

    me = whoami(client.tracking_uri)
    if not me.authenticated:
        typer.echo(f"note: {client.tracking_uri.split('?')[0]} is an unauthenticated local store; "
                   f"recording --reviewer or the OS user {me.name!r}", err=True)  # fmt: skip
    return me


@app.command()
def promote(
    model: Annotated[str, typer.Option(help="registered model name")],
    version: Annotated[str, typer.Option(help="the version to make champion")],
    reason: Annotated[str, typer.Option(help="why (recorded)")],
    reviewer: Annotated[
        str | None, typer.Option(help="who approves; team mode: the authenticated user (default)")
    ] = None,
    override_reason: Annotated[
        str | None, typer.Option(help="promote a version whose gate did not pass; recorded")
    ] = None,
    override_four_eyes: Annotated[
        str | None, typer.Option(help="admin only: promote a version you trained or registered; the reason")
    ] = None,
    root: RootOption = None,
) -> None:
    """Move alias `champion` to a gated version, recording reviewer, reason, time and the previous one."""
    from components.registry import promote as promote_version

    paths, settings, client = _registry(root)
    try:
        change = promote_version(
            client, model, version, reviewer, reason, settings.locks(paths.root), override_reason,
            me=_acting(client), four_eyes_override=override_four_eyes,
        )  # fmt: skip
    except _registry_errors() as e:
        raise fail(str(e)) from None
    typer.echo(f"{model}: champion is version {change.version} (was {change.previous or 'none'}; "
               f"by {change.reviewer})")  # fmt: skip


@app.command()
def rollback(
    model: Annotated[str, typer.Option(help="registered model name")],
    reason: Annotated[str, typer.Option(help="why (recorded)")],
    reviewer: Annotated[
        str | None, typer.Option(help="who rolls back; team mode: the authenticated user (default)")
    ] = None,
    root: RootOption = None,
) -> None:
    """Restore the champion that the current champion replaced."""
    from components.registry import rollback as rollback_version

    paths, settings, client = _registry(root)
    try:
        change = rollback_version(client, model, reviewer, reason, settings.locks(paths.root),
                                  me=_acting(client))  # fmt: skip
    except _registry_errors() as e:
        raise fail(str(e)) from None
    typer.echo(f"{model}: champion is version {change.version} again (was {change.previous})")


@app.command("embed-batch")
def embed_batch(
    model: Annotated[
        str, typer.Option(help="NAME@ALIAS, NAME/VERSION or models:/...; a bare name: champion")
    ],
    dataset: Annotated[str, typer.Option(help="an ingested dataset under data/")],
    instruction: Annotated[list[str], typer.Option("--instruction", "-i", help="repeatable")] = [],  # noqa: B006
    task: Annotated[list[str], typer.Option(help="a probe task of the card: its manual instruction")] = [],  # noqa: B006
    universal: UniversalOption = False,
    split: SplitOption = "all",
    out: OutOption = Path("embeddings.parquet"),
    batch_size: BatchOption = None,
    shard_users: Annotated[int, typer.Option(help="users per shard (the unit of resume and of work)")] = 1024,
    workers: WorkersOption = None,
    dask_address: DaskAddressOption = None,
    root: RootOption = None,
) -> None:
    """Embed a dataset's users with a registry version (default: the champion) into parquet.

    Users go in shards; a re-run with the same inputs skips the shards already written."""
    from components.ingestion import CARD_FILENAME, DatasetCard
    from components.registry import resolve
    from flows.embed_batch import embed_batch_flow
    from flows.settings import Paths
    from flows.sharding import ShardRunner

    paths = Paths.resolve(root)
    try:
        runner = ShardRunner.from_options(workers, dask_address)
        card = DatasetCard.load(paths.data / dataset / CARD_FILENAME)
        instructions: list[str | None] = [*instruction, *(card.task(t).instruction for t in task)]
        if universal or not instructions:
            instructions.insert(0, None)
        if split not in ("all", "train", "probe"):
            raise ValueError(f"split must be all, train or probe, not {split!r}")
        _, _, client = _registry(root)
        resolve(client, model)  # fail fast: an unknown model or alias before any flow starts
    except (*_registry_errors(), ValueError) as e:
        raise fail(str(e)) from None
    typer.echo(f"embed-batch on {runner.description}", err=True)
    result = run_flow(
        runner.apply(embed_batch_flow), model=model, dataset=dataset, instructions=instructions,
        out=str(out.resolve()), split=split, batch_size=batch_size, shard_users=shard_users,
        root=str(paths.root),
    )  # fmt: skip
    typer.echo(result.to_text())
    typer.echo(f"wrote {result.rows:,} embeddings from {result.source.name} version "
               f"{result.source.version} to {out}")  # fmt: skip


@app.command()
def serve(
    model: Annotated[
        str, typer.Option(help="NAME@ALIAS, NAME/VERSION or models:/...; a bare name: champion")
    ],
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 5001,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="require `Authorization: Bearer <token>` (the file's first line; or $INSTRUCTUE_SERVE_TOKEN)"
        ),
    ] = None,
    protect_health: Annotated[bool, typer.Option(help="/ping and /health need the token too")] = False,
    root: RootOption = None,
) -> None:
    """Serve a registry version over REST (MLflow's scoring app, requests bounded and checked)."""
    import os

    from components.registry import ModelRef, RegistryError, TokenError, read_token, serve_command

    paths, settings, _ = _registry(root)
    try:
        uri = ModelRef.parse(model).uri
        token = read_token(token_file)  # refuse a short or unreadable token before the server starts
    except (RegistryError, TokenError) as e:
        raise fail(str(e)) from None
    cmd, env = serve_command(
        uri, settings.tracking(paths.root), settings.registry(paths.root), host, port,
        token_file=token_file, protect_health=protect_health,
    )  # fmt: skip
    auth = "bearer token required" if token else "no authentication (give --token-file to require one)"
    typer.echo(f"serving {uri} on http://{host}:{port}/invocations; {auth}", err=True)
    os.execvpe(cmd[0], cmd, env)
