#!/usr/bin/env bash
# Installs everything the test suite needs (idempotent) and runs lint plus the whole suite.
# Used verbatim by .ci/run. Needs only Python 3.11+ and access to the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
install_dev_env
install_tool tap-jsonl 'tap-jsonl==0.3.1'   # a third-party tap (pins singer-sdk 0.53: own venv)
install_tool meltano 'meltano==4.4.1'       # the orchestrator, for the pipeline end-to-end test
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
export TAP_JSONL_BIN="$PWD/.tools/tap-jsonl/bin/tap-jsonl"
export MELTANO_BIN="$PWD/.tools/meltano/bin/meltano"
.venv/bin/python -m pytest --cov --cov-report=term --cov-fail-under=80 "$@"
