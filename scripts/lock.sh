#!/usr/bin/env bash
# Re-pins constraints.txt: resolves the repository's distribution (its extras) and the dev group
# afresh (without the old pins) in a throwaway venv, then freezes it. Run after changing a
# dependency; commit the result. scripts/_env.sh installs with `-c constraints.txt`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON_BIN" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check \
  -e ".[$DEV_EXTRAS]" --group dev
{
  echo "# Pinned versions for reproducible installs (scripts/lock.sh writes this file)."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -v '^pip=='
} >constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
