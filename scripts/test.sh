#!/usr/bin/env bash
# Installs everything the test suite needs (idempotent) and runs lint plus the whole suite.
# Used verbatim by .ci/run. Needs only Python 3.11+ and access to the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
install_dev_env
install_tool tap-jsonl 'tap-jsonl==0.3.1'   # a third-party tap (pins singer-sdk 0.53: own venv)
install_tool meltano 'meltano==4.4.1'       # the orchestrator, for the pipeline end-to-end test
# Dagster running the split jobs through dagster-meltano (tests/pipeline/test_dagster_jobs.py);
# dagster-shell 0.25.13 is its last release, so dagster stays at 1.9.13
install_tool dagster 'dagster-meltano==1.5.5' 'dagster==1.9.13' 'dagster-shell==0.25.13'
install_npm_tool azurite 'azurite@3.37.0'  # Azure Blob emulator (tests/azure_fixtures.py)
# a PostgreSQL server for the shared Iceberg catalog tests (tests/postgres_fixtures.py): Debian's
# package, installed only when initdb/pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin
if ! { command -v pg_ctl && command -v initdb; } >/dev/null \
  && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
export TAP_JSONL_BIN="$PWD/.tools/tap-jsonl/bin/tap-jsonl"
export MELTANO_BIN="$PWD/.tools/meltano/bin/meltano"
export DAGSTER_BIN="$PWD/.tools/dagster/bin/dagster"
.venv/bin/python -m pytest --cov --cov-report=term --cov-fail-under=80 "$@"
