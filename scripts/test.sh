#!/usr/bin/env bash
# The test command: set up the environment (idempotent), lint, then the default test tiers
# (unit + integration; `slow` needs the real default models and runs with: -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
./scripts/setup.sh
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
# pytest exits 5 when it collects nothing; under `set -e` that fails the run, as it should
"$VENV/bin/python" -m pytest -m "not slow" "$@"
