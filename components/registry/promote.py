"""Reviewer promotion and rollback of the `champion` alias, recorded as tags.

    promote(client, "instructue-movielens-100k", "3", reviewer="ana", reason="beats v2 on all tasks",
            lock_dir=settings.locks(root))
    rollback(client, "instructue-movielens-100k", reviewer="ana", reason="v3 drifts", lock_dir=...)

A promotion moves `champion` to a version whose gate passed (a version without a passed gate needs an
override reason, recorded as `gate.override_reason`), tags it with the reviewer, the reason, the
time and `previous_champion`, and drops `challenger` from it. A rollback moves `champion` back to
the current champion's `previous_champion`; repeated rollbacks walk further back.

MLflow's aliases are single-valued, so the registry can never hold two champions; what needs care is
the bookkeeping around the alias (read the champion, tag, move). Each change runs under a lock per
registered model: a file lock in `lock_dir` (processes on this machine) plus a thread lock, then
checks after moving the alias that it still points where it was set, so a change made elsewhere
between the read and the write (the UI, another machine) is reported instead of recorded wrongly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from components.common import file_lock
from components.registry.register import CHALLENGER, CHAMPION, RegistryError
from components.registry.team import Action, Identity, check_reviewer_flag, four_eyes, require

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class AliasChange:
    name: str
    action: str  # promote | rollback
    version: str  # the champion now
    previous: str | None  # the champion before
    reviewer: str
    reason: str
    at: str


def model_lock(lock_dir: Path, name: str, timeout: float = LOCK_TIMEOUT_S):
    """Serialise alias changes of one registered model across the threads and processes of a host."""
    path = Path(lock_dir) / f"{name.replace('/', '_')}.lock"
    return file_lock(path, timeout, lambda: RegistryError(
        f"timed out after {timeout:.0f} s waiting for {path}: another promotion or rollback holds it; "
        "retry when it finishes"))  # fmt: skip


def alias_version(client, name: str, alias: str) -> str | None:
    """The version an alias points to, or None if the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            _require_model(client, name)
            return None
        raise


def _require_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(
                f"no registered model {name!r}; register one with `instructue register`"
            ) from None
        raise


def model_version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            _require_model(client, name)
            raise RegistryError(
                f"registered model {name!r} has no version {version}; list versions in the MLflow UI "
                f"or with `mlflow models` / MlflowClient.search_model_versions(\"name='{name}'\")"
            ) from None
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _move_champion(client, change: AliasChange) -> None:
    client.set_registered_model_alias(change.name, CHAMPION, change.version)
    if alias_version(client, change.name, CHAMPION) != change.version:
        raise RegistryError(
            f"{change.name}: `{CHAMPION}` moved while this {change.action} ran (someone changed it outside "
            "`instructue`); check the current champion and try again"
        )
    client.set_registered_model_tag(
        change.name, "champion.last_change", json.dumps(change.__dict__, sort_keys=True)[:4000]
    )


def promote(
    client,
    name: str,
    version: str | int,
    reviewer: str | None,
    reason: str,
    lock_dir: Path,
    override_reason: str | None = None,
    me: Identity | None = None,
    four_eyes_override: str | None = None,
) -> AliasChange:
    """Move `champion` to `version`; refuses a version whose gate did not pass unless overridden.

    `me` is the acting user (`team.whoami`): on a team server the recorded reviewer is whoever the
    server authenticated, who needs the reviewer role and must not have trained or registered the
    version (four-eyes; an admin may override with a recorded reason). Without `me` the given
    reviewer is recorded as is (a local store).

    Raises:
        RegistryError: unknown model or version, an ungated version without `override_reason`, a
            version that is already the champion, or a missing reviewer or reason.
        TeamError: a missing role, a --reviewer that is not the authenticated user, the four-eyes rule.
    """
    version = str(version)
    target = f"{name} version {version}"
    if me is not None:
        require(me, Action.PROMOTE, target)
        reviewer = check_reviewer_flag(me, reviewer)
    if not (reviewer or "").strip() or not reason.strip():
        raise RegistryError("a promotion needs a reviewer and a reason (--reviewer, --reason)")
    with model_lock(lock_dir, name):
        mv = model_version(client, name, version)
        extra = four_eyes(me, Action.PROMOTE, target, mv.tags, four_eyes_override) if me else {}
        gate = mv.tags.get("gate.passed")
        if gate != "true" and not (override_reason and override_reason.strip()):
            state = "failed" if gate == "false" else "has no gate verdict"
            raise RegistryError(
                f"{name} version {version}: its evaluation gate {state}; promote it only with "
                "--override-reason '...' (recorded on the version), or register a model that passes"
            )
        previous = alias_version(client, name, CHAMPION)
        if previous == version:
            raise RegistryError(f"{name} version {version} is already the {CHAMPION}")
        change = AliasChange(name, "promote", version, previous, reviewer, reason, _now())
        tags = {"promoted_by": reviewer, "promotion_reason": reason, "promoted_at": change.at,
                "previous_champion": previous or "", **extra}  # fmt: skip
        if me is not None:  # who ran it: verified by the server, or the OS user of a local store
            tags |= {"promoted_by.authenticated": str(me.authenticated).lower(), "promoted_by.os_user":
                     "" if me.authenticated else me.name}  # fmt: skip
        if gate != "true":
            tags["gate.override_reason"] = override_reason.strip()
            tags["gate.override_by"] = reviewer
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        _move_champion(client, change)
        if alias_version(client, name, CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    log.info("%s: champion %s -> %s (by %s)", name, previous, version, reviewer)
    return change


def rollback(
    client, name: str, reviewer: str | None, reason: str, lock_dir: Path, me: Identity | None = None
) -> AliasChange:
    """Move `champion` back to the version it replaced (the current champion's `previous_champion`);
    on a team server only a reviewer (or an admin) may, recorded by the authenticated name.

    Raises:
        RegistryError: no champion, no recorded previous champion, or that version was deleted.
        TeamError: a missing role or a --reviewer that is not the authenticated user.
    """
    if me is not None:
        require(me, Action.ROLLBACK, name)
        reviewer = check_reviewer_flag(me, reviewer)
    if not (reviewer or "").strip() or not reason.strip():
        raise RegistryError("a rollback needs a reviewer and a reason (--reviewer, --reason)")
    with model_lock(lock_dir, name):
        current = alias_version(client, name, CHAMPION)
        if current is None:
            raise RegistryError(f"{name} has no {CHAMPION} to roll back; promote a version first")
        previous = model_version(client, name, current).tags.get("previous_champion") or None
        if previous is None:
            raise RegistryError(
                f"{name} version {current} replaced no earlier champion, so there is nothing to roll back "
                "to; promote another version instead"
            )
        model_version(client, name, previous)  # it may have been deleted since
        change = AliasChange(name, "rollback", previous, current, reviewer, reason, _now())
        tags = {"rolled_back_by": reviewer, "rollback_reason": reason, "rolled_back_at": change.at}
        if me is not None and not me.authenticated:
            tags["rolled_back_by.os_user"] = me.name
        for key, value in tags.items():
            client.set_model_version_tag(name, current, key, value)
        client.set_model_version_tag(name, previous, "restored_at", change.at)
        _move_champion(client, change)
    log.info("%s: champion rolled back %s -> %s (by %s)", name, current, previous, reviewer)
    return change
