# Shared install helpers for scripts/*.sh (sourced, not run).
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"

install_dev_env() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON_BIN" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,plot]'
}

# install_tool NAME REQUIREMENT: a tool in its own venv under .tools/NAME (dependency isolation).
install_tool() {
  local name="$1" requirement="$2"
  if [ ! -x ".tools/$name/bin/$name" ]; then
    "$PYTHON_BIN" -m venv ".tools/$name"
    ".tools/$name/bin/python" -m pip install -q --disable-pip-version-check "$requirement"
  fi
}
