#!/usr/bin/env bash
# The test command: set up the environment (idempotent), lint, then the default test tiers
# (unit + integration; `slow` needs the real default models and runs with: -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
./scripts/setup.sh
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
# Two pytest-xdist workers (TEST_WORKERS=0: one process). Much of a test's time is single-threaded
# (imports, subprocess CLIs, Prefect's server start), so two workers beat one even on 2 cores;
# `loadfile` keeps a file's module-scoped fixtures (trained tiny models, a serving process) on one
# worker. pytest exits 5 when it collects nothing; under `set -e` that fails the run, as it should
"$VENV/bin/python" -m pytest -m "not slow" -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
