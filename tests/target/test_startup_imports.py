"""Start-up: a run imports only what its table format needs (issue 22: Iceberg start-up).

Each test runs the target's CLI in a fresh interpreter on one SCHEMA, RECORD and STATE, then
lists the packages left in ``sys.modules``: pyiceberg and SQLAlchemy cost about a third of a
second of import that a plain-parquet run must not pay.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.target.singer_data import event, record_message, schema_message, state_message

pytestmark = pytest.mark.e2e

# Runs the CLI as its console script does, then prints the top-level packages imported.
CHILD = """
import json, sys
sys.argv = ["target-parquet-parts", "--config", sys.argv[1]]
code = 0
try:
    from target_parquet_parts.target import TargetParquetParts
    TargetParquetParts.cli()
except SystemExit as exc:
    code = exc.code
sys.stderr.write("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})) + "\\n")
sys.exit(code)
"""

ICEBERG_ONLY = ("pyiceberg", "sqlalchemy", "pydantic", "strictyaml", "pyparsing")


def imported_packages(tmp_path: Path, **settings: object) -> set[str]:
    """Top-level packages in ``sys.modules`` after a one-record run with these settings."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"output_dir": str(tmp_path / "out"), **settings}))
    lines = [schema_message(), record_message(event(0)), state_message({"n": 1})]
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert '"n"' in completed.stdout, completed.stdout  # the STATE came out: the run completed
    marker = [line for line in completed.stderr.splitlines() if line.startswith("MODULES ")]
    assert marker, completed.stderr
    return set(json.loads(marker[-1].removeprefix("MODULES ")))


def test_a_plain_parquet_run_imports_neither_pyiceberg_nor_sqlalchemy(tmp_path):
    packages = imported_packages(tmp_path)
    assert not packages & set(ICEBERG_ONLY), sorted(packages & set(ICEBERG_ONLY))
    assert "pyarrow" in packages  # the check would mean nothing if the run had not written


def test_an_iceberg_run_imports_them_when_it_opens_its_catalog(tmp_path):
    """The other side of the check above: the list of packages is not empty by accident."""
    pytest.importorskip("pyiceberg")
    packages = imported_packages(tmp_path, table_format="iceberg")
    assert {"pyiceberg", "sqlalchemy"} <= packages
