"""DVC versioning of `data/`: one `data.dvc` at the project root tracks every ingested dataset.

    from components.ingestion import versioning
    versioning.ensure_dvc_repo(root)               # dvc init, analytics off, default remote
    version = versioning.version_data(root)        # dvc add data -> data.dvc (not committed)
    versioning.commit_pointer(root, "data: ...")   # git commit data.dvc (flows that re-version)
    versioning.push(root)                          # dvc push to the default remote

The default remote is the folder `~/.cache/instructue/dvc-remote`, stored in `.dvc/config` as
written (DVC expands the `~`), so no machine path is committed and every clone on the machine shares
it: `instructue ingest` pushes there and `dvc pull` in a second clone restores the same bytes. The
environment variable `INSTRUCTUE_DVC_REMOTE` (a folder or a URL) replaces it for this package's DVC
calls without touching any config file; a shared remote for a team (an S3 bucket:
`set_remote(root, "s3://bucket/prefix")`, `infra/`) needs `pip install "dvc[s3]"` and credentials in
the git-ignored `.dvc/config.local`, e.g. `dvc remote modify --local local access_key_id ...`.

DVC runs in-process through `dvc.repo.Repo`; every path is taken from `root`, never from the working
directory. DVC's repo-wide lock (`.dvc/tmp/lock`) retries for about 3 s, then fails with "Unable to
acquire lock", so a long `add` or `push` makes a parallel call fail. Every function that runs DVC
here first takes `repo_lock(root)` instead, which waits: a lock per root shared by the threads of
this process plus an advisory file lock (in the system temp folder) shared by processes.
Nothing here sends analytics: `DVC_NO_ANALYTICS=1` is set before DVC runs and the repo's config gets
`core.analytics false` and `core.check_update false`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.common import file_lock, quiet_logger, temp_lock_path

log = logging.getLogger(__name__)

DEFAULT_REMOTE = "local"
DEFAULT_REMOTE_URL = "~/.cache/instructue/dvc-remote"  # per user, shared by every clone on the machine
REMOTE_ENV = "INSTRUCTUE_DVC_REMOTE"  # replaces the default remote for this package's DVC calls
ENV_REMOTE = "env"  # the remote's name when REMOTE_ENV is set
LOCK_TIMEOUT_S = 600.0
_URL = re.compile(r"^\w+://")


class VersioningError(RuntimeError):
    """A DVC or git step failed; the message names the repository and the fix."""


@dataclass(frozen=True)
class Pointer:
    """What a `.dvc` file records about its tracked folder (read without running DVC)."""

    dvc_file: Path
    md5: str  # DVC's directory hash, as written in the file: "<hex>.dir"
    nfiles: int
    size: int


@dataclass(frozen=True)
class DataVersion:
    """One version of `data/`: DVC's pointer plus a content fingerprint per dataset folder."""

    dvc_file: Path
    md5: str
    nfiles: int
    size: int
    datasets: dict[str, str] = field(default_factory=dict)  # data/<name>/ -> md5 (see fingerprint_datasets)

    def __str__(self) -> str:
        names = ", ".join(self.datasets) or "no datasets"
        return f"{self.dvc_file.name} {self.md5[:12]} ({self.nfiles} files, {_human(self.size)}; {names})"


@dataclass(frozen=True)
class Transfer:
    """What a push or pull moved."""

    action: str  # "push" or "pull"
    remote: str
    url: str
    # DVC's counts: a push counts objects (each new file plus one listing per tracked folder version),
    # a pull counts the files it fetched.
    files: int
    changed: list[str] = field(default_factory=list)  # pull: workspace paths added, modified or deleted

    def __str__(self) -> str:
        where = f"{'to' if self.action == 'push' else 'from'} remote {self.remote!r} ({self.url})"
        moved = "pushed {} object(s)" if self.action == "push" else "fetched {} file(s)"
        text = f"{moved.format(self.files)} {where}"
        if self.changed:
            text += f"; updated {', '.join(self.changed)}"
        return text if self.files or self.changed else f"nothing to {self.action} {where}: up to date"


@dataclass(frozen=True)
class DataStatus:
    """Where the workspace stands against its pointers and the default remote."""

    pointer: Pointer | None
    remote: str | None
    workspace: list[str]  # "data: modified", ... ; empty when the workspace matches the pointers
    # Object counts as DVC reports them (a tracked folder's listing is one object); None: no remote.
    not_pushed: int | None = None  # in the local cache, not in the remote
    not_pulled: int | None = None  # in the remote, not in the local cache
    missing: int | None = None  # in neither: this version cannot be restored here

    def __str__(self) -> str:
        p = self.pointer
        lines = [
            f"pointer: {p.dvc_file.name} {p.md5[:12]} ({p.nfiles} files, {_human(p.size)})"
            if p
            else "pointer: none (nothing versioned yet)",
            "workspace: " + ("; ".join(self.workspace) or "matches the pointers"),
        ]
        if self.remote is None:
            lines.append("remote: none configured (instructue data remote PATH_OR_URL)")
        else:
            counts = (
                f"objects: {self.not_pushed} not pushed, {self.not_pulled} not pulled, {self.missing} missing"
            )
            lines.append(f"remote {self.remote!r}: {counts}")
        return "\n".join(lines)


def repo_lock(root: Path, timeout: float = LOCK_TIMEOUT_S):
    """Hold the versioning lock of `root`: one DVC or git step at a time, across threads and processes.

    Not re-entrant. The lock file lives in the system temp folder (keyed by the root's path), so it
    exists before `dvc init` and never shows up in the repository.
    """
    key = Path(root).resolve()
    path = temp_lock_path("dvc", key)
    why = (
        f"timed out after {timeout:.0f} s waiting for another process's DVC step on {key} (lock file {path})"
    )
    return file_lock(path, timeout, lambda: VersioningError(why))


@contextmanager
def _dvc(root: Path, action: str) -> Iterator[Any]:
    """An open `dvc.repo.Repo` at `root`, with DVC's chatter at WARNING and its errors translated."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.config import NoRemoteError
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.lock import LockError
    from dvc.repo import Repo

    override = os.environ.get(REMOTE_ENV, "").strip()
    config = {"core": {"remote": ENV_REMOTE}, "remote": {ENV_REMOTE: {"url": override}}} if override else None
    try:
        with quiet_logger("dvc"), Repo(str(root), config=config) as repo:
            repo.scm_context.quiet = True  # no "to track the changes with git, run ..." hints
            yield repo
    except NotDvcRepoError:
        raise VersioningError(
            f"{root} is not a DVC repository: run `instructue ingest` (or `dvc init` there) first"
        ) from None
    except LockError:
        raise VersioningError(
            f"dvc {action}: another DVC command holds {root}/.dvc/tmp/lock; wait for it to finish "
            "(delete the file only if no DVC process is running)"
        ) from None
    except NoRemoteError:
        raise VersioningError(
            f"dvc {action}: no DVC remote is configured in {root}: run `instructue data remote PATH_OR_URL`"
        ) from None
    except DvcException as e:  # e.g. an s3:// remote without dvc[s3] names the pip install to run
        raise VersioningError(f"dvc {action} failed in {root}: {' '.join(str(e).split())}") from None


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        raise VersioningError("git is not installed or not on PATH; DVC versioning needs it") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        raise VersioningError(f"`git {' '.join(args)}` failed in {root}: {msg}")
    return proc


def _git_toplevel(root: Path) -> Path | None:
    proc = _git(root, "rev-parse", "--show-toplevel", check=False)
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


def _stored_url(root: Path, url: str) -> str:
    """The remote URL as DVC should store it: URLs as given, local folders relative where possible."""
    from dvc.config_schema import RelPath

    if not url.strip():
        raise VersioningError("remote URL is empty: give a folder path or an s3://bucket/prefix URL")
    if _URL.match(url):
        return url
    path = Path(url).expanduser()
    if not path.is_absolute():
        return RelPath(str((root / path).resolve()))  # written relative to .dvc/
    if path.resolve().is_relative_to(root):
        return RelPath(str(path.resolve()))
    return str(path)  # a folder outside the checkout: kept absolute, as the user gave it


def _quiet_config(conf: dict[str, Any]) -> None:
    conf["core"]["analytics"] = "false"
    conf["core"]["check_update"] = "false"


def ensure_dvc_repo(root: Path, no_scm: bool = False) -> bool:
    """Make `root` a DVC repository with analytics off and a default remote; True if it ran `dvc init`.

    Needs `root` to be inside a git repository (a subfolder of one gets `dvc init --subdir`), unless
    `no_scm=True`. Without a default remote, adds `local` -> `~/.cache/instructue/dvc-remote`
    (written with the `~`, so the committed config names no machine path). Safe to call every run.

    Raises:
        VersioningError: `root` is missing, is not in a git repository, or DVC failed.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise VersioningError(f"project root {root} does not exist")
    with repo_lock(root):
        created = False
        if not (root / ".dvc").is_dir():
            top = None if no_scm else _git_toplevel(root)
            if not no_scm and top is None:
                raise VersioningError(
                    f"{root} is not a git repository: run `git init` there first (DVC pointers are "
                    "committed to git), or pass no_scm=True to version without git"
                )
            os.environ.setdefault("DVC_NO_ANALYTICS", "1")
            from dvc.exceptions import DvcException
            from dvc.repo import Repo

            try:
                with quiet_logger("dvc"):
                    Repo.init(str(root), no_scm=no_scm, subdir=top is not None and top != root).close()
            except DvcException as e:
                raise VersioningError(f"dvc init failed in {root}: {e}") from None
            created = True
            log.info("initialised DVC in %s", root)
        with _dvc(root, "config") as repo, repo.config.edit("repo") as conf:
            _quiet_config(conf)
            if not conf["core"].get("remote"):
                conf["remote"].setdefault(DEFAULT_REMOTE, {"url": DEFAULT_REMOTE_URL})
                conf["core"]["remote"] = DEFAULT_REMOTE
                log.info("default DVC remote %r -> %s", DEFAULT_REMOTE, DEFAULT_REMOTE_URL)
        return created


def set_remote(
    root: Path, url: str, name: str = DEFAULT_REMOTE, default: bool = True, local_config: bool = False
) -> str:
    """Add or change the DVC remote `name` (a folder or a URL such as `s3://bucket/prefix`).

    A relative folder is taken relative to `root` and stored relative to `.dvc/`, as is an absolute
    folder inside `root`; other absolute folders are stored as given. With `local_config`, the remote
    goes to `.dvc/config.local` (git-ignored, this checkout only): the place for machine paths and
    credentials. An S3 remote needs `pip install "dvc[s3]"`; put its credentials there, never in
    `.dvc/config`. Returns the URL as DVC resolves it.

    Raises:
        VersioningError: the name or URL is empty, or `root` is not a DVC repository.
    """
    root = Path(root).resolve()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise VersioningError(f"remote name {name!r} must be letters, digits, '_', '-' or '.'")
    name = name.lower()  # DVC lowercases remote names
    stored = _stored_url(root, url)
    with repo_lock(root), _dvc(root, "remote") as repo:
        with repo.config.edit("local" if local_config else "repo") as conf:
            conf["remote"].setdefault(name, {})["url"] = stored
            if default:
                conf["core"]["remote"] = name
        return str(repo.config["remote"][name]["url"])


def fingerprint_datasets(data: Path) -> dict[str, str]:
    """A content md5 per dataset folder `data/<name>/`, independent of DVC, timestamps and file order.

    Each folder's md5 is over its files' `relative/posix/path<TAB>content md5` lines, sorted by path.
    Hidden folders (a publish's `.name.tmp-*` temps) and loose files in `data/` are not datasets.
    """
    out: dict[str, str] = {}
    if not Path(data).is_dir():
        return out
    for folder in sorted(p for p in Path(data).iterdir() if p.is_dir() and not p.name.startswith(".")):
        lines = sorted(
            f"{f.relative_to(folder).as_posix()}\t{_file_md5(f)}\n" for f in folder.rglob("*") if f.is_file()
        )
        out[folder.name] = hashlib.md5("".join(lines).encode(), usedforsecurity=False).hexdigest()
    return out


def version_data(root: Path, data_dir: str = "data") -> DataVersion:
    """`dvc add <data_dir>`: cache the folder's content and write `<data_dir>.dvc` at the root.

    Does not commit to git: the flow or the user commits `data.dvc` (and `.gitignore`), e.g. with
    `commit_pointer`. The same content always gives the same md5. Serialised by `repo_lock(root)`.

    Raises:
        VersioningError: the folder is missing, `root` is not a DVC repository, or DVC failed.
    """
    root = Path(root).resolve()
    data = root / data_dir
    if not (root / ".dvc").is_dir():
        raise VersioningError(
            f"{root} is not a DVC repository: call ensure_dvc_repo(root) (or `dvc init`) first"
        )
    if not data.is_dir():
        raise VersioningError(f"nothing to version: {data} does not exist; run `instructue ingest` first")
    with repo_lock(root), _dvc(root, "add") as repo:
        repo.add(str(data))
    pointer = read_pointer(root, data_dir)
    return DataVersion(
        pointer.dvc_file, pointer.md5, pointer.nfiles, pointer.size, fingerprint_datasets(data)
    )


def read_pointer(root: Path, data_dir: str = "data") -> Pointer:
    """Parse `<root>/<data_dir>.dvc` (YAML) without running DVC.

    Raises:
        VersioningError: the file is missing or does not describe `data_dir`.
    """
    dvc_file = Path(root).resolve() / f"{data_dir}.dvc"
    if not dvc_file.is_file():
        raise VersioningError(
            f"{dvc_file} does not exist: nothing is versioned yet (run `instructue ingest`)"
        )
    try:
        raw = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
        out = next(o for o in raw.get("outs", []) if o.get("path") == Path(data_dir).name)
        return Pointer(dvc_file, str(out["md5"]), int(out.get("nfiles", 0)), int(out.get("size", 0)))
    except (yaml.YAMLError, StopIteration, KeyError, TypeError, AttributeError, ValueError):
        raise VersioningError(
            f"{dvc_file} is not a DVC pointer for {data_dir!r}; restore it from git or run version_data again"
        ) from None


def commit_pointer(root: Path, message: str, data_dir: str = "data") -> str | None:
    """Git-commit `<data_dir>.dvc`, `.gitignore` and DVC's config files if they changed; the new sha or None.

    Only those paths are committed; other staged changes stay staged.

    Raises:
        VersioningError: git failed (no repository, no user.name/user.email, ...).
    """
    root = Path(root).resolve()
    candidates = [f"{data_dir}.dvc", ".gitignore", (Path(data_dir).parent / ".gitignore").as_posix(),
                  ".dvc/config", ".dvc/.gitignore", ".dvcignore"]  # fmt: skip
    paths = sorted({p for p in candidates if (root / p).is_file()})
    if not paths:
        return None
    with repo_lock(root):
        _git(root, "add", "--", *paths)
        if _git(root, "diff", "--cached", "--quiet", "--", *paths, check=False).returncode == 0:
            return None
        proc = _git(root, "commit", "-q", "-m", message, "--", *paths, check=False)
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip()
            hint = " (set `git config user.name` and `git config user.email`)" if "identity" in msg else ""
            raise VersioningError(f"git commit of {', '.join(paths)} failed in {root}: {msg}{hint}")
        return _git(root, "rev-parse", "HEAD").stdout.strip()


def push(root: Path, remote: str | None = None) -> Transfer:
    """`dvc push`: upload what the pointers reference to `remote` (default: the default remote)."""
    root = Path(root).resolve()
    with repo_lock(root), _dvc(root, "push") as repo:
        name, url = _remote(repo, remote, root)
        count = repo.push(remote=remote)
    return Transfer("push", name, url, int(count))


def pull(root: Path, remote: str | None = None) -> Transfer:
    """`dvc pull`: fetch what the pointers reference and check it out into the workspace."""
    root = Path(root).resolve()
    with repo_lock(root), _dvc(root, "pull") as repo:
        name, url = _remote(repo, remote, root)
        result = repo.pull(remote=remote)
    changed = [
        f"{_rel(p, root)} ({kind})" for kind in ("added", "modified", "deleted") for p in result.get(kind, [])
    ]
    return Transfer("pull", name, url, int(result.get("stats", {}).get("fetched", 0)), changed)


def status(root: Path, data_dir: str = "data") -> DataStatus:
    """`dvc status` and `dvc status --cloud` in one summary (the cloud part only with a remote)."""
    root = Path(root).resolve()
    pointer = read_pointer(root, data_dir) if (root / f"{data_dir}.dvc").is_file() else None
    with repo_lock(root), _dvc(root, "status") as repo:
        workspace = _flatten_status(repo.status())
        name = repo.config["core"].get("remote")
        if not name:
            return DataStatus(pointer, None, workspace)
        cloud = repo.status(cloud=True)
    states = list(cloud.values())
    return DataStatus(
        pointer, name, workspace, states.count("new"), states.count("deleted"), states.count("missing")
    )


def _remote(repo: Any, name: str | None, root: Path) -> tuple[str, str]:
    name = name or repo.config["core"].get("remote")
    if not name:
        raise VersioningError(f"no default DVC remote in {root}: run `instructue data remote PATH_OR_URL`")
    if name not in repo.config["remote"]:
        known = ", ".join(sorted(repo.config["remote"])) or "none"
        raise VersioningError(f"DVC remote {name!r} is not configured in {root} (known: {known})")
    return name, str(repo.config["remote"][name]["url"])


def _flatten_status(result: dict[str, Any]) -> list[str]:
    """`{"data.dvc": [{"changed outs": {"data": "modified"}}]}` -> `["data: modified"]`."""
    lines = []
    for stage, changes in result.items():
        for change in changes if isinstance(changes, list) else [changes]:
            if isinstance(change, dict):
                lines += [f"{path}: {state}" for group in change.values() for path, state in group.items()]
            else:
                lines.append(f"{Path(stage).name}: {change}")
    return lines


def _rel(path: str, root: Path) -> str:
    """DVC reports paths relative to the working directory; show them relative to the root."""
    return Path(os.path.relpath(Path(path).resolve(), root)).as_posix().rstrip("/") or "."


def _file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
