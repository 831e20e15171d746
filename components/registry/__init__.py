"""The MLflow Model Registry side of the platform (DESIGN.md section 6).

    settings.py      where the registry lives and what names it uses (mlruns_config/registry.yaml)
    records.py       request records (a user's profile per row) <-> model inputs; signature, example
    served.py        a model folder plus its dataset card, embedding request records
    pyfunc_model.py  the models-from-code file MLflow loads (no pickled classes)
    register.py      gated registration: log the pyfunc, attach the report, version + `challenger`
    promote.py       reviewer promotion to `champion`, rollback, under a lock
    batch.py         embed a dataset's users from a registry alias into parquet
    serve.py         the scoring-server command for an alias
    scoring_app.py   MLflow's scoring app behind request bounds (body, depth, records, schema)
    team.py          team mode: MLflow's basic-auth server, roles, who is acting, four-eyes

Nothing here sets global MLflow state: every function takes an explicit `MlflowClient`.
"""

from components.registry.batch import (
    DEFAULT_SHARD_USERS,
    EmbedJob,
    ModelRef,
    RegistrySource,
    embed_shard,
    finish_embedding,
    plan_embedding,
    resolve,
)
from components.registry.champion import champion_for
from components.registry.promote import promote, rollback
from components.registry.records import RecordError
from components.registry.register import RegistryError, register
from components.registry.scoring_auth import TokenError, read_token
from components.registry.serve import serve_command
from components.registry.settings import RegistrySettings
from components.registry.team import (
    Identity,
    Role,
    TeamError,
    TeamServer,
    add_user,
    list_users,
    read_admin_password,
    read_password,
    server_command,
    whoami,
)

__all__ = [
    "Identity",
    "Role",
    "TeamError",
    "TeamServer",
    "add_user",
    "list_users",
    "read_admin_password",
    "read_password",
    "server_command",
    "whoami",
    "DEFAULT_SHARD_USERS",
    "EmbedJob",
    "ModelRef",
    "RecordError",
    "RegistryError",
    "RegistrySettings",
    "RegistrySource",
    "TokenError",
    "champion_for",
    "embed_shard",
    "finish_embedding",
    "plan_embedding",
    "promote",
    "read_token",
    "register",
    "resolve",
    "rollback",
    "serve_command",
]
