"""Team mode (issue 32): MLflow's basic-auth server, the platform's roles as MLflow roles, who is
acting, and the four-eyes rule for promotion.

    argv, env = server_command(TeamServer(home=Path("team")), read_admin_password(None))
    add_user(uri, "ana", password, Role.REVIEWER)        # `instructue users add` (an admin's credentials)
    me = whoami(uri)                                      # the name the server authenticated
    require(me, Action.PROMOTE, "instructue-movielens-100k version 3")
    tags = four_eyes(me, Action.PROMOTE, "... version 3", version_tags, override)

Authentication and permission checks are MLflow's (`mlflow server --app-name basic-auth`); nothing
here checks a password. The three roles are MLflow RBAC roles in the `default` workspace, granted on
every experiment and registered model (`*`):

| role     | experiments | registered models | what it is for                                  |
|----------|-------------|-------------------|-------------------------------------------------|
| trainer  | EDIT        | EDIT              | run flows, log runs, register challengers       |
| reviewer | READ        | MANAGE            | promote and roll back `champion`                |
| viewer   | READ        | READ              | read runs, versions and reports                 |

A user without a role has `NO_PERMISSIONS` (the server's default); MLflow admins pass every role
check but not the four-eyes rule, which they may override with a recorded reason.

What MLflow cannot enforce by itself: setting an alias needs EDIT on the registered model, as
registering a version does, so the server cannot tell `challenger` from `champion`; a trainer could
move `champion` through MLflow's own API. `instructue promote` and `rollback` refuse it (the role and
four-eyes checks here), and the version's tags say who did what.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from components.common import acting_user, is_server_uri, read_secret, write_text
from components.registry.register import RegistryError

WORKSPACE = "default"
# MLflow 2.x shipped `admin_password = password1234` in its basic_auth.ini; a server started with it
# is open to anyone who read that file
BUILTIN_ADMIN_PASSWORDS = frozenset({"password1234", "password", "admin"})
MIN_PASSWORD = 12
ADMIN_PASSWORD_ENV = "INSTRUCTUE_ADMIN_PASSWORD"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"


class TeamError(RegistryError):
    """Team mode refused: bad credentials, a missing right, the four-eyes rule, a weak password."""


class Role(StrEnum):
    TRAINER = "trainer"
    REVIEWER = "reviewer"
    VIEWER = "viewer"


GRANTS: dict[Role, dict[str, str]] = {
    Role.TRAINER: {"experiment": "EDIT", "registered_model": "EDIT"},
    Role.REVIEWER: {"experiment": "READ", "registered_model": "MANAGE"},
    Role.VIEWER: {"experiment": "READ", "registered_model": "READ"},
}


class Action(StrEnum):
    REGISTER = "register"
    PROMOTE = "promote"
    ROLLBACK = "roll back"


NEEDS: dict[Action, Role] = {Action.REGISTER: Role.TRAINER, Action.PROMOTE: Role.REVIEWER,
                             Action.ROLLBACK: Role.REVIEWER}  # fmt: skip


@dataclass(frozen=True)
class Identity:
    name: str
    authenticated: bool  # verified by a basic-auth server; False: a local store, the OS user
    admin: bool = False
    roles: frozenset[str] = field(default_factory=frozenset)

    def describe(self) -> str:
        return "admin" if self.admin else (", ".join(sorted(self.roles)) or "no role")


# -- the server ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeamServer:
    """`instructue team-server`: MLflow's tracking server with basic-auth, all state under `home`."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 5000
    admin_username: str = "admin"
    default_permission: str = "NO_PERMISSIONS"
    backend_store_uri: str | None = None  # default: SQLite under `home` (Postgres: postgresql://...)
    auth_database_uri: str | None = None  # users and roles; default: SQLite under `home`
    artifacts_destination: str | None = None  # default: `home/artifacts` (s3://... for MinIO/S3)

    def __post_init__(self):
        if self.default_permission not in ("NO_PERMISSIONS", "READ"):
            raise TeamError(
                f"a new user's default permission may be NO_PERMISSIONS or READ, not "
                f"{self.default_permission!r}: rights to change anything come from a role"
            )

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"


def check_password(password: str, what: str = "the admin password") -> str:
    if password in BUILTIN_ADMIN_PASSWORDS:
        raise TeamError(f"{what} is MLflow's published default; choose another one")
    if len(password) < MIN_PASSWORD:
        raise TeamError(f"{what} is shorter than {MIN_PASSWORD} characters")
    return password


def read_password(file: Path | None, env: str, what: str) -> str:
    """`what` from `file` (its first line) or `$env` (`read_secret`), checked by `check_password`."""
    try:
        password = read_secret(file, env)
    except OSError as e:
        raise TeamError(f"cannot read {what} from {file}: {e.strerror}") from None
    if not password:
        raise TeamError(f"no {what}: give a password file or set {env}")
    return check_password(password, what)


def read_admin_password(file: Path | None) -> str:
    """The admin password from `file` or `$INSTRUCTUE_ADMIN_PASSWORD`."""
    return read_password(file, ADMIN_PASSWORD_ENV, "admin password")


def server_command(server: TeamServer, admin_password: str) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server --app-name basic-auth` command line and its environment; writes the auth
    config (no password in it: MLflow reads the first admin's from the environment) under `home`."""
    import sys

    check_password(admin_password)
    home = Path(server.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "basic_auth.ini"
    auth_db = server.auth_database_uri or f"sqlite:///{home / 'auth.db'}"
    write_text(config, "\n".join([
        "[mlflow]", f"default_permission = {server.default_permission}",
        f"database_uri = {auth_db}",
        f"admin_username = {server.admin_username}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access = false", ""]))  # fmt: skip
    config.chmod(0o600)  # a Postgres auth database's URI holds its password
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           SECRET_KEY_ENV: os.environ.get(SECRET_KEY_ENV) or _secret_key(home)}  # fmt: skip
    argv = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--host", server.host, "--port", str(server.port), "--workers", "1",
            "--backend-store-uri", server.backend_store_uri or f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination", server.artifacts_destination or str(home / "artifacts"),
            "--serve-artifacts"]  # fmt: skip
    return argv, env


def _secret_key(home: Path) -> str:
    """Flask's session key, made once per server home and kept there (owner-only)."""
    path = home / "secret_key"
    if not path.is_file():
        write_text(path, secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


# -- users and roles -------------------------------------------------------------------------------
def _auth_client(uri: str):
    from mlflow.server import get_app_client

    return get_app_client("basic-auth", tracking_uri=uri)


def _call(uri: str, what: str, fn):
    """Run an auth-client call; MLflow's 401 / 403 become one clear line."""
    from mlflow.exceptions import MlflowException

    try:
        return fn()
    except MlflowException as e:
        text = str(e)
        if "401" in text:
            raise TeamError(f"{uri} refused the credentials of user {acting_user(uri)!r} to {what}: "
                            "wrong password or unknown user (MLFLOW_TRACKING_USERNAME / "
                            "MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials)") from None  # fmt: skip
        if "403" in text:
            raise TeamError(f"user {acting_user(uri)!r} may not {what} at {uri}: MLflow denied it "
                            "(it needs an admin)") from None  # fmt: skip
        raise TeamError(f"{what} at {uri} failed: {text.splitlines()[0][:300]}") from None


def ensure_roles(uri: str) -> dict[Role, int]:
    """Create the three roles with their grants where missing; their MLflow role ids."""
    client = _auth_client(uri)
    have = {r.name: r.id for r in _call(uri, "list roles", lambda: client.list_roles(WORKSPACE))}
    for role, grants in GRANTS.items():
        if role.value not in have:
            made = _call(uri, "create roles", lambda r=role: client.create_role(
                WORKSPACE, r.value, description=f"instructue {r.value}"))  # fmt: skip
            for resource, permission in grants.items():
                _call(uri, "grant a role's permissions", lambda m=made, r=resource, p=permission:
                      client.add_role_permission(m.id, r, "*", p))  # fmt: skip
            have[role.value] = made.id
    return {role: have[role.value] for role in Role}


def add_user(uri: str, name: str, password: str, role: Role) -> None:
    """Create `name` with `role` (run with an admin's credentials)."""
    check_password(password, f"the password of {name!r}")
    ids = ensure_roles(uri)
    client = _auth_client(uri)
    _call(uri, f"create user {name!r}", lambda: client.create_user(name, password))
    _call(uri, f"give {name!r} the {role} role", lambda: client.assign_role(name, ids[role]))


def list_users(uri: str) -> list[dict]:
    """Every user with its admin flag and platform roles (an admin sees all, a user itself)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    def get():  # MLflow's REST endpoint; its auth client has no call for it
        endpoint = "/api/2.0/mlflow/users/list"
        response = http_request(get_default_host_creds(uri), endpoint, "GET")
        return verify_rest_response(response, endpoint).json()["users"]

    users = _call(uri, "list users", get)
    names = {r.value for r in Role}
    return [{"user": u["username"], "admin": bool(u.get("is_admin")),
             "roles": sorted(r["name"] for r in u.get("roles", []) if r["name"] in names)}
            for u in users]  # fmt: skip


# -- who is acting, and may they -------------------------------------------------------------------
def whoami(uri: str | None) -> Identity:
    """The acting user: on a tracking server the one it authenticates (its admin flag and roles);
    on a local store the operating-system user, unverified."""
    if not is_server_uri(uri):
        return Identity(acting_user(uri), authenticated=False)
    from mlflow.utils.credentials import read_mlflow_creds

    name = read_mlflow_creds().username
    if not name:
        raise TeamError(f"{uri} is a team server: set MLFLOW_TRACKING_USERNAME and "
                        "MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials) to say who you are")  # fmt: skip
    client = _auth_client(uri)
    user = _call(uri, "read its own account", lambda: client.get_user(name))
    roles = _call(uri, "read its own roles", lambda: client.list_user_roles(name))
    return Identity(name, True, bool(user.is_admin), frozenset(r.name for r in roles))


def require(me: Identity, action: Action, target: str) -> None:
    """Refuse `action` on `target` unless `me` holds the role it needs (admins hold every role);
    a local store has no roles and refuses nothing."""
    if not me.authenticated or me.admin or NEEDS[action].value in me.roles:
        return
    raise TeamError(f"user {me.name!r} may not {action} {target}: it needs the {NEEDS[action]} role "
                    f"(has: {me.describe()})")  # fmt: skip


def check_reviewer_flag(me: Identity, reviewer: str | None) -> str:
    """The name to record: the authenticated user; a differing --reviewer is refused in team mode."""
    if me.authenticated and reviewer and reviewer != me.name:
        raise TeamError(f"--reviewer {reviewer!r} is not the authenticated user {me.name!r}; in team "
                        "mode the recorded reviewer is whoever the server authenticated")  # fmt: skip
    return me.name if me.authenticated else (reviewer or me.name)


def four_eyes(me: Identity, action: Action, target: str, tags: dict[str, str],
              override: str | None = None) -> dict[str, str]:  # fmt: skip
    """Refuse a promotion by whoever trained or registered the version (`trained_by`,
    `registered_by` tags) unless an admin overrides it with a reason; the tags to record."""
    authors = {tags.get("trained_by"), tags.get("registered_by")} - {None, ""}
    if not me.authenticated or me.name not in authors:
        return {}
    if override is None or not override.strip():
        raise TeamError(f"user {me.name!r} may not {action} {target}: it trained or registered it "
                        "(four-eyes rule); another reviewer must, or an admin with --override-four-eyes "
                        "'<reason>'")  # fmt: skip
    if not me.admin:
        raise TeamError(f"user {me.name!r} may not override the four-eyes rule on {target}: only an "
                        "admin may")  # fmt: skip
    return {"four_eyes.override_by": me.name, "four_eyes.override_reason": override.strip()[:4000]}
