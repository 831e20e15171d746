"""`instructue team-server` and `instructue users add | list`: team mode (components/registry/team.py).

export INSTRUCTUE_ADMIN_PASSWORD=...            # or --admin-password-file FILE
instructue team-server --home team/ --port 5000  # MLflow with basic-auth, state under team/
export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...
instructue users add ana --role reviewer --password-file ana.txt
instructue users list
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import app, fail

users_app = typer.Typer(
    help="Team mode's users and roles (an admin's MLflow credentials).", no_args_is_help=True
)
NEW_PASSWORD_ENV = "INSTRUCTUE_NEW_USER_PASSWORD"


def _server_uri() -> str:
    from components.common import is_server_uri

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not is_server_uri(uri):
        raise fail("users live on a team server: set MLFLOW_TRACKING_URI=http://HOST:PORT (instructue "
                   "team-server) and an admin's MLFLOW_TRACKING_USERNAME / _PASSWORD")  # fmt: skip
    return uri


@app.command("team-server")
def team_server(
    home: Annotated[Path, typer.Option(help="the server's state: runs, registry, users, artifacts")] = Path(
        "team"
    ),
    host: Annotated[str, typer.Option(help="interface to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 5000,
    admin_password_file: Annotated[
        Path | None, typer.Option(help="first line: the admin's password (else $INSTRUCTUE_ADMIN_PASSWORD)")
    ] = None,
    admin_username: Annotated[str, typer.Option(help="the admin account made on first start")] = "admin",
    default_permission: Annotated[
        str, typer.Option(help="a new user's rights before a role: NO_PERMISSIONS or READ")
    ] = "NO_PERMISSIONS",
    backend_store_uri: Annotated[
        str | None, typer.Option(help="runs and registry (default: SQLite in --home; postgresql://...)")
    ] = None,
    auth_database_uri: Annotated[
        str | None, typer.Option(help="users and roles (default: SQLite in --home)")
    ] = None,
    artifacts_destination: Annotated[
        str | None,
        typer.Option(help="artifact store the server proxies (default: --home/artifacts; s3://...)"),
    ] = None,
) -> None:
    """Run MLflow's tracking server with basic-auth (`mlflow server --app-name basic-auth`) for a team."""
    from components.registry import TeamError, TeamServer, read_admin_password, server_command

    try:
        server = TeamServer(home, host, port, admin_username, default_permission, backend_store_uri,
                            auth_database_uri, artifacts_destination)  # fmt: skip
        argv, env = server_command(server, read_admin_password(admin_password_file))
    except (TeamError, OSError) as e:
        raise fail(str(e)) from None
    typer.echo(f"team server at {server.uri} (state in {home}); admin user {admin_username!r}", err=True)
    os.execvpe(argv[0], argv, env)  # the server's process from here on; signals reach MLflow


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="the new user's name")],
    role: Annotated[str, typer.Option(help="trainer | reviewer | viewer")],
    password_file: Annotated[
        Path | None, typer.Option(help=f"first line: the new user's password (else ${NEW_PASSWORD_ENV})")
    ] = None,
) -> None:
    """Create a user with a role (admin only)."""
    from components.registry import Role, TeamError, add_user, read_password

    try:
        chosen = Role(role)
    except ValueError:
        raise fail(f"unknown role {role!r}; choose one of: {', '.join(r.value for r in Role)}") from None
    try:
        password = read_password(password_file, NEW_PASSWORD_ENV, f"the password of {name!r}")
    except TeamError as e:
        raise fail(str(e)) from None
    uri = _server_uri()
    try:
        add_user(uri, name, password, chosen)
    except TeamError as e:
        raise fail(str(e)) from None
    typer.echo(f"added {name!r} as {chosen} at {uri}")


@users_app.command("list")
def users_list() -> None:
    """Every user with its role(s): an admin sees every user, anyone else only themselves."""
    from components.registry import TeamError, list_users

    uri = _server_uri()
    try:
        rows = list_users(uri)
    except TeamError as e:
        raise fail(str(e)) from None
    typer.echo(f"{'user':<24} role")
    for row in rows:
        typer.echo(f"{row['user']:<24} {'admin' if row['admin'] else ', '.join(row['roles']) or '(none)'}")
