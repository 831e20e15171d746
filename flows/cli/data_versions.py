"""`instructue data ...`: push, pull and inspect the DVC versions of `data/`.

    instructue data status                      # pointer, workspace changes, what the remote lacks
    instructue data push                        # upload data/ as data.dvc references it
    instructue data pull                        # fetch and check out data/ (e.g. in a fresh clone);
                                                # no remote holds it: rebuild movielens-100k, check hash
    instructue data remote s3://bucket/prefix   # change the default remote (S3 needs dvc[s3])
    instructue data remote /mnt/store --local   # this checkout only (.dvc/config.local, not committed)

Each command takes `--root` (default: `$INSTRUCTUE_ROOT`, else the git top-level of the working
directory). User errors print one line and exit with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.settings import Paths

data_app = typer.Typer(
    help="Push, pull and inspect the DVC versions of data/ (data.dvc at the project root).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RootOption = Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")]
RemoteOption = Annotated[str | None, typer.Option(help="remote name (default: the default remote)")]


def _root(root: Path | None) -> Path:
    return Paths.resolve(root).root


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@data_app.command()
def push(remote: RemoteOption = None, root: RootOption = None) -> None:
    """Upload the data that data.dvc references to the remote."""
    from components.ingestion import VersioningError, push

    try:
        typer.echo(str(push(_root(root), remote)))
    except VersioningError as e:
        raise _fail(str(e)) from None


@data_app.command()
def pull(
    remote: RemoteOption = None,
    rebuild: Annotated[
        list[str] | None,
        typer.Option(
            help="when no remote holds the version: rebuild these embedded datasets and check "
            "the hash (repeatable; default movielens-100k)"
        ),
    ] = None,
    no_rebuild: Annotated[bool, typer.Option("--no-rebuild", help="fail instead of rebuilding")] = False,
    root: RootOption = None,
) -> None:
    """Fetch the data that data.dvc references and check it out into data/; when the remote lacks it
    (a fresh machine), rebuild the embedded datasets from their packages and check DVC's hash."""
    from components.ingestion import VersioningError, pull, push
    from flows.rebuild import EMBEDDED, rebuild_data

    paths = Paths.resolve(root)
    try:
        typer.echo(str(pull(paths.root, remote)))
        return
    except VersioningError as e:
        if no_rebuild or not (paths.root / f"{paths.data_dir}.dvc").is_file():
            raise _fail(str(e)) from None
        missing = e
    datasets = rebuild or list(EMBEDDED)
    typer.echo(f"the remote does not hold this version ({missing}); rebuilding {', '.join(datasets)} "
               "from the installed packages", err=True)  # fmt: skip
    try:
        version = rebuild_data(paths, datasets)
        typer.echo(f"rebuilt {version}: the same hash as data.dvc")
        typer.echo(str(push(paths.root, remote)))  # so the next clone's `dvc pull` finds it
    except (VersioningError, ValueError, FileNotFoundError) as e:
        raise _fail(str(e)) from None


@data_app.command()
def status(root: RootOption = None) -> None:
    """Show the data pointer, workspace changes and what the default remote lacks."""
    from components.ingestion import VersioningError, status

    try:
        typer.echo(str(status(_root(root))))
    except VersioningError as e:
        raise _fail(str(e)) from None


@data_app.command()
def remote(
    url: Annotated[
        str, typer.Argument(help="a folder (relative to the root, or absolute) or s3://bucket/prefix")
    ],
    name: Annotated[str, typer.Option(help="remote name")] = "local",
    local: Annotated[
        bool, typer.Option("--local", help="write to .dvc/config.local (this checkout only, not committed)")
    ] = False,
    root: RootOption = None,
) -> None:
    """Set the default DVC remote. S3 needs `pip install dvc-s3`; put credentials in .dvc/config.local."""
    from components.ingestion import VersioningError, ensure_dvc_repo, set_remote

    try:
        project = _root(root)
        ensure_dvc_repo(project)
        resolved = set_remote(project, url, name=name, default=True, local_config=local)
    except VersioningError as e:
        raise _fail(str(e)) from None
    where = ".dvc/config.local" if local else ".dvc/config"
    typer.echo(f"default DVC remote {name.lower()!r} -> {resolved} (in {where})")
