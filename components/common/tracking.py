"""Which store, and who is acting in it, without a server call: the name MLflow will authenticate
for a tracking server (`MLFLOW_TRACKING_USERNAME` or MLflow's credentials file), the operating-system
user otherwise.

Training and evaluation runs carry it as the tag `instructue.user`, so registration can record who
trained a version and promotion can apply the four-eyes rule (`components.registry.team`). Whether
the name is genuine is the server's business: the registry side verifies it (`team.whoami`).
"""

from __future__ import annotations

import getpass

USER_TAG = "instructue.user"


def is_server_uri(uri: str | None) -> bool:
    """A tracking server (team mode) rather than a local store (a path, `file:` or `sqlite:`)."""
    return bool(uri) and str(uri).lower().startswith(("http://", "https://"))


def acting_user(tracking_uri: str | None) -> str:
    if is_server_uri(tracking_uri):
        from mlflow.utils.credentials import read_mlflow_creds

        name = read_mlflow_creds().username
        if name:
            return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return "unknown"
