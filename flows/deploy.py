"""Scheduled deployments of the retraining flow on a Prefect work pool.

    prefect server start                                      # another terminal; or a remote server
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    instructue deploy                                         # weekly retraining, process pool
    instructue deploy --cron "0 2 * * *" --profile tiny --pool gpu-box
    prefect worker start --pool instructue-process            # runs what the schedule creates

`prefect.yaml` at the project root is the single description of the deployment (`prefect --no-prompt
deploy --name weekly` reads it directly); `instructue deploy` starts from the same entry and applies
its options on top, creates the process work pool when it is missing, and registers the deployment
through `flow.from_source(...).deploy(...)`. The flow's code is read from the source folder at run
time (a `set_working_directory` pull step), so a worker on the same machine needs no image.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PREFECT_FILE = "prefect.yaml"
DEFAULT_DEPLOYMENT = "weekly"


class DeployError(ValueError):
    """A deployment that cannot be made as asked; the message names the value and the fix."""


class DeploymentSpec(BaseModel):
    """One deployment: which flow, where it runs, when, and with which parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    entrypoint: str = Field(pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
    pool: str = Field(min_length=1)
    cron: str
    timezone: str = "UTC"
    parameters: dict[str, Any] = {}
    description: str | None = None
    tags: tuple[str, ...] = ()
    paused: bool = False

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=value)
        except (ValueError, ValidationError) as e:
            raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '0 3 * * 1')") from e
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron="0 0 * * *", timezone=value)
        except (ValueError, ValidationError) as e:
            raise ValueError(f"{value!r} is not an IANA timezone (e.g. UTC, Europe/Paris)") from e
        return value

    def with_options(self, params: dict[str, Any] | None = None, **options: Any) -> DeploymentSpec:
        """A copy with the given non-None options; `dataset`, `profile` and `overrides` are flow
        parameters, as is every entry of `params`."""
        params = {**self.parameters, **(params or {})}
        for key in ("dataset", "profile", "overrides"):
            value = options.pop(key, None)
            if value is not None:
                params[key] = list(value) if key == "overrides" else value
        fields = {k: v for k, v in options.items() if v is not None}
        try:
            return DeploymentSpec.model_validate({**self.model_dump(), **fields, "parameters": params})
        except ValidationError as e:
            raise DeployError(_problems(e)) from None


@dataclass(frozen=True)
class Deployed:
    id: UUID
    flow_name: str
    name: str

    @property
    def full_name(self) -> str:
        """What `prefect deployment run` takes: `<flow name>/<deployment name>`."""
        return f"{self.flow_name}/{self.name}"


def _problems(error: ValidationError) -> str:
    lines = [f"{'.'.join(map(str, p['loc'])) or 'deployment'}: {p['msg']}" for p in error.errors()]
    return "invalid deployment: " + "; ".join(lines)


def load_spec(prefect_file: Path, name: str = DEFAULT_DEPLOYMENT) -> DeploymentSpec:
    """Read deployment `name` of a `prefect.yaml` into a spec (its first cron schedule and work pool)."""
    if not prefect_file.is_file():
        raise DeployError(f"{prefect_file} does not exist: pass --prefect-file, or run from the project root")
    document = yaml.safe_load(prefect_file.read_text(encoding="utf-8")) or {}
    entries = {d.get("name"): d for d in document.get("deployments") or []}
    if name not in entries:
        known = ", ".join(sorted(map(str, entries))) or "none"
        raise DeployError(f"{prefect_file} has no deployment {name!r} (it has: {known})")
    entry = entries[name]
    crons = [s for s in entry.get("schedules") or [] if "cron" in s]
    if not crons:
        raise DeployError(f"{prefect_file}: deployment {name!r} needs a cron schedule under `schedules`")
    try:
        return DeploymentSpec(
            name=name,
            entrypoint=entry.get("entrypoint", ""),
            pool=(entry.get("work_pool") or {}).get("name") or "",
            cron=crons[0]["cron"],
            timezone=crons[0].get("timezone", "UTC"),
            parameters=entry.get("parameters") or {},
            description=entry.get("description"),
            tags=tuple(entry.get("tags") or ()),
            paused=not crons[0].get("active", True),
        )
    except ValidationError as e:
        raise DeployError(f"{prefect_file}: {_problems(e)}") from None


def require_server() -> str:
    """The API URL of a reachable Prefect server; deploying to a temporary one would be lost at exit."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise DeployError(
            "no Prefect server is configured: start one with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (or `prefect config set PREFECT_API_URL=...`)"
        )
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise DeployError(f"the Prefect server at {url} does not answer ({problem}); is it running?")
    return url


def ensure_process_pool(name: str) -> bool:
    """Create work pool `name` of type `process` unless it exists; True if it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        return True


def deploy(spec: DeploymentSpec, source: Path, create_pool: bool = True) -> Deployed:
    """Register `spec` with the configured Prefect server, its code read from `source` at run time.

    Raises:
        DeployError: no reachable server, a missing entrypoint file, or parameters the flow rejects.
    """
    from prefect import Flow
    from prefect.exceptions import MissingFlowError, ParameterTypeError, ScriptError, SignatureMismatchError
    from prefect.schedules import Schedule

    source = source.resolve()
    path = source / spec.entrypoint.split(":")[0]
    if not path.is_file():
        raise DeployError(f"entrypoint {spec.entrypoint!r}: {path} does not exist")
    require_server()
    if create_pool:
        ensure_process_pool(spec.pool)
    try:
        flow = Flow.from_source(source=str(source), entrypoint=spec.entrypoint)
    except (MissingFlowError, ScriptError, ImportError, AttributeError) as e:
        raise DeployError(f"cannot load the flow {spec.entrypoint} from {source}: {e}") from None
    try:  # the server stores any parameters; a mismatch would only show when the first run starts
        flow.validate_parameters(spec.parameters)
    except (ParameterTypeError, SignatureMismatchError) as e:
        raise DeployError(f"parameters {spec.parameters} do not fit {spec.entrypoint}: {e}") from None
    schedule = Schedule(cron=spec.cron, timezone=spec.timezone, active=not spec.paused)
    with contextlib.redirect_stdout(io.StringIO()):  # Prefect prints a summary table; callers report
        deployment_id = flow.deploy(
            name=spec.name,
            work_pool_name=spec.pool,
            schedules=[schedule],
            parameters=spec.parameters,
            description=spec.description,
            tags=list(spec.tags),
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        )
    return Deployed(id=deployment_id, flow_name=flow.name, name=spec.name)
