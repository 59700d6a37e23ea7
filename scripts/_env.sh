# Shared install helpers for scripts/*.sh (sourced, not run).
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"

install_dev_env() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON_BIN" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # the repository's one distribution, editable with the extras the tests use, and the dev
  # tools, at the versions pinned in constraints.txt (scripts/lock.sh writes it)
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
    -e '.[s3,iceberg,plot]' --group dev
}

# install_tool NAME REQUIREMENT: a tool in its own venv under .tools/NAME (dependency isolation).
install_tool() {
  local name="$1" requirement="$2"
  if [ ! -x ".tools/$name/bin/$name" ]; then
    "$PYTHON_BIN" -m venv ".tools/$name"
    ".tools/$name/bin/python" -m pip install -q --disable-pip-version-check "$requirement"
  fi
}
