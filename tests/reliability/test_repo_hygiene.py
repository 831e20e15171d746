"""The repository holds no developer machine's paths and no credentials.

Transcripts and benchmark JSONs are written from real runs, so an absolute path of the machine that
ran them slips in easily; the containers' own home (``/home/instructue``) is part of the product.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Absolute paths that only exist on some developer's or CI machine.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|Users)/[\w.-]+|(?<![\w.])/home/(?!instructue\b)[\w.-]+")
# Shapes of real credentials: private key blocks, AWS access key ids, GitHub and OpenAI-style tokens.
CREDENTIAL = re.compile(
    r"-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----|AKIA[0-9A-Z]{16}|ghp_[0-9A-Za-z]{36}|sk-[0-9A-Za-z]{40,}"
)
# Fakes the tests pass on purpose (to prove they are never written out), allowed by name.
KNOWN_FAKES = ("AKIATESTTESTTESTTEST",)


def tracked_text_files() -> list[Path]:
    """Every tracked text file but this one, whose examples must match the patterns."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if (
            name
            and path.is_file()
            and path.resolve() != Path(__file__).resolve()
            and b"\0" not in path.read_bytes()[:4096]
        ):
            files.append(path)
    return files


def strip_fakes(line: str) -> str:
    for fake in KNOWN_FAKES:
        line = line.replace(fake, "")
    return line


def offending_lines(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(strip_fakes(line)):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    return found


def test_no_tracked_file_names_a_machine_path():
    assert offending_lines(MACHINE_PATH) == []


def test_no_tracked_file_holds_a_credential():
    assert offending_lines(CREDENTIAL) == []


@pytest.mark.parametrize(
    "line, pattern, hit",
    [
        ("$ /work/main/.venv/bin/prefect server start", MACHINE_PATH, True),
        ("cache at /root/.cache/instructue", MACHINE_PATH, True),
        ("volumes: worker-cache:/home/instructue/.cache", MACHINE_PATH, False),
        ("see ../shared/work/notes and src/work/x", MACHINE_PATH, False),
        ("key = AKIAABCDEFGHIJKLMNOP", CREDENTIAL, True),
        (strip_fakes('"AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST"'), CREDENTIAL, False),
        ('SECRET = "sk-test-5ecret-do-not-leak"', CREDENTIAL, False),
    ],
)
def test_the_patterns_catch_what_they_should(line, pattern, hit):
    assert bool(pattern.search(line)) is hit
