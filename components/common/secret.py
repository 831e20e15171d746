"""A secret from a file (its first line) or an environment variable, never from a command-line flag,
so it stays out of shell history and process listings (the scoring token, team-mode passwords)."""

from __future__ import annotations

import os
from pathlib import Path


def read_secret(file: Path | None, env: str) -> str:
    """`file`'s first line when a file is given (an unreadable file raises OSError), else `$env`;
    "" when that is empty or unset."""
    if file is not None:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else ""
    return os.environ.get(env, "").strip()
