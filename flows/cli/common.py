"""What every `instructue` command shares: the Typer app, the one-line user error, running a flow."""

from __future__ import annotations

from typing import Any

import typer

app = typer.Typer(
    help="Train, evaluate, register and serve instruction-aware user embedding models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def user_errors() -> tuple[type[BaseException], ...]:
    from components.ingestion import CardError, ContractError, TooManyBadRows, UnknownReader

    errors: list[type[BaseException]] = [CardError, ContractError, TooManyBadRows, UnknownReader,
                                         FileNotFoundError, ValueError]  # fmt: skip
    try:
        from components.ingestion import VersioningError

        errors.append(VersioningError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def run_flow(flow_fn, **parameters):
    """Run a Prefect flow; a user error inside it exits 2 with its message, anything else raises.

    However the run is stopped (SIGTERM, SIGKILL), Prefect's temporary server goes with it."""
    from flows.shutdown import guard_cli_run

    guard_cli_run()
    state = flow_fn(**parameters, return_state=True)
    if state.is_failed():
        try:
            state.result()
        except user_errors() as e:
            raise fail(str(e)) from None
    return state.result()


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are parsed as YAML scalars (10000 -> int, 0.3 -> float, a/b -> str)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {pair!r} must look like key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
