# Shared install helpers for scripts/*.sh (sourced, not run).
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
# the extras the tests use: one list for install_dev_env and scripts/lock.sh
DEV_EXTRAS="s3,gcs,azure,iceberg-postgres,plot"

install_dev_env() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON_BIN" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # the repository's one distribution, editable with the extras the tests use, and the dev
  # tools, at the versions pinned in constraints.txt (scripts/lock.sh writes it)
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
    -e ".[$DEV_EXTRAS]" --group dev
}

# install_tool NAME REQUIREMENT...: a tool in its own venv under .tools/NAME (dependency
# isolation); several requirements pin the tool's own dependencies too.
install_tool() {
  local name="$1"
  shift
  if [ ! -x ".tools/$name/bin/$name" ]; then
    "$PYTHON_BIN" -m venv ".tools/$name"
    ".tools/$name/bin/python" -m pip install -q --disable-pip-version-check "$@"
  fi
}

# install_npm_tool NAME PACKAGE@VERSION: an npm package under .tools/NAME (Node 18+ with npm),
# reinstalled when the pinned version changes.
install_npm_tool() {
  local name="$1" spec="$2"
  if [ "$(cat ".tools/$name/.installed" 2>/dev/null)" != "$spec" ]; then
    command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ (for $spec)" >&2; return 1; }
    npm install --prefix ".tools/$name" --no-audit --no-fund --loglevel=error "$spec"
    echo "$spec" > ".tools/$name/.installed"
  fi
}
