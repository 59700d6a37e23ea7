"""Dagster definitions for this Meltano project: its jobs and schedules, read from meltano.yml.

dagster-meltano asks Meltano itself (`meltano job list` / `meltano schedule list`, as JSON) and
makes one Dagster job per Meltano job (`lake-part1` -> `lake_part1`, each task an op running
`meltano run <task> --force`) and one Dagster schedule per Meltano schedule (same cron). This file
is no part of the distribution: it runs in Dagster's own tool venv (`.tools/dagster`, installed by
scripts/test.sh), never in the plugins' venvs.

    .tools/dagster/bin/dagster definitions validate -f orchestration/dagster_definitions.py
    .tools/dagster/bin/dagster job list -f orchestration/dagster_definitions.py
    .tools/dagster/bin/dagster job execute -f orchestration/dagster_definitions.py -j lake_part1

Which project and which Meltano (both read when Dagster loads this file):
- MELTANO_PROJECT_ROOT: the project directory; default: this repository's root.
- MELTANO_BIN: the Meltano executable; default: `meltano` on PATH, else `.tools/meltano`.
The Meltano commands inherit Dagster's environment, so `MELTANO_ENVIRONMENT` and the plugins'
own variables (e.g. `TAP_RAPID7_BASE_URL`) reach them as they reach `meltano run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from dagster import Definitions, JobDefinition, ScheduleDefinition
from dagster_meltano import MeltanoResource, load_jobs_from_meltano_project

REPO = Path(__file__).resolve().parents[1]


def _project_dir() -> str:
    return str(Path(os.environ.get("MELTANO_PROJECT_ROOT") or REPO).resolve())


def _meltano_bin() -> str:
    explicit = os.environ.get("MELTANO_BIN")
    if explicit:
        return str(Path(explicit).resolve())
    return shutil.which("meltano") or str(REPO / ".tools" / "meltano" / "bin" / "meltano")


PROJECT_DIR = _project_dir()
MELTANO_BIN = _meltano_bin()

# dagster-meltano's MeltanoResource is a process-wide singleton: the first instance is the one
# that both load_jobs_from_meltano_project (which would otherwise run plain `meltano` from PATH)
# and the jobs' `meltano` resource use at run time. Create it first, with this project's Meltano.
_meltano = MeltanoResource(project_dir=PROJECT_DIR, meltano_bin=MELTANO_BIN)
if (_meltano.project_dir, _meltano.meltano_bin) != (PROJECT_DIR, MELTANO_BIN):
    raise RuntimeError(
        f"dagster-meltano already holds project {_meltano.project_dir} with "
        f"{_meltano.meltano_bin}; expected {PROJECT_DIR} with {MELTANO_BIN}"
    )

# dagster-meltano runs `meltano job list` and `meltano schedule list` at the same time; in a
# project without its system database yet (.meltano/meltano.db) both create it and one fails
# ("MigrationError: Cannot upgrade the system database"). One Meltano command first creates it.
if (
    not os.environ.get("MELTANO_DATABASE_URI")
    and not (Path(PROJECT_DIR) / ".meltano" / "meltano.db").exists()
):
    _first = subprocess.run(
        [MELTANO_BIN, "job", "list", "--format=json"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if _first.returncode != 0:
        raise RuntimeError(f"{MELTANO_BIN} job list failed:\n{_first.stderr[-3000:]}")

_loaded = load_jobs_from_meltano_project(PROJECT_DIR)
assert MeltanoResource(project_dir=PROJECT_DIR) is _meltano  # the same instance at run time

defs = Definitions(
    jobs=[d for d in _loaded if isinstance(d, JobDefinition)],
    schedules=[d for d in _loaded if isinstance(d, ScheduleDefinition)],
)
