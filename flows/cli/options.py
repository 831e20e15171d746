"""Options several `instructue` commands take, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RootOption = Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")]
SplitOption = Annotated[str, typer.Option(help="all, train or probe")]
OutOption = Annotated[Path, typer.Option(help="parquet: user_id, instruction, embedding")]
UniversalOption = Annotated[bool, typer.Option(help="also embed without instruction")]
BatchOption = Annotated[int | None, typer.Option(help="users per forward pass")]
WorkersOption = Annotated[
    int | None,
    typer.Option(help="run the shards on a local Dask cluster of N worker processes (default: this process)"),
]
DaskAddressOption = Annotated[
    str | None,
    typer.Option(
        "--dask-address", envvar="INSTRUCTUE_DASK_ADDRESS",
        help="run the shards on this Dask scheduler (tcp://host:8786)",
    ),
]  # fmt: skip
