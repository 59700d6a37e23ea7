"""The split jobs under a real orchestrator: Dagster, through dagster-meltano, loads meltano.yml's
jobs and schedules from orchestration/dagster_definitions.py; three `dagster job execute` at once
(lake_part1..3, each `meltano run tap-rapid7--partN target-parquet-parts--iceberg --force`) fill
one Iceberg table that must equal the emulator's truth, every event once.

Dagster lives in its own tool venv (.tools/dagster, scripts/test.sh installs it; DAGSTER_BIN),
Meltano in its own (.tools/meltano; MELTANO_BIN): the definitions are handed Meltano through
MELTANO_BIN alone (no `meltano` on PATH here) and the project through MELTANO_PROJECT_ROOT: a
temporary copy of the repository's sources and meltano.yml, installed once for the module, as
in test_meltano_pipeline.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.distribution_sources import copy_distribution_sources
from tests.meltano_cli import MELTANO, requires_meltano
from tests.pipeline.test_meltano_pipeline import (
    MINUTE,
    SPLIT_LOADER,
    _base_env,
    _dev_log_ids,
    _iso,
    _meltano,
)
from tests.target.iceberg_helpers import duckdb_counts, scan, summaries

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEFINITIONS = REPO / "orchestration" / "dagster_definitions.py"
# The install line of scripts/test.sh, named by a missing Dagster's failure.
INSTALL = next(
    line.split("#")[0].strip()
    for line in (REPO / "scripts" / "test.sh").read_text(encoding="utf-8").splitlines()
    if line.startswith("install_tool dagster ")
)
# The same rule as Meltano's (tests/meltano_cli.py): under CI or scripts/test.sh (which sets
# DAGSTER_BIN) a missing Dagster fails; only a bare developer run may skip.
DAGSTER = Path(os.environ.get("DAGSTER_BIN", REPO / ".tools" / "dagster" / "bin" / "dagster"))
DAGSTER_REQUIRED = bool(os.environ.get("CI") or "DAGSTER_BIN" in os.environ)

requires_dagster = pytest.mark.skipif(
    not DAGSTER.exists() and not DAGSTER_REQUIRED,
    reason=f"Dagster not installed at {DAGSTER} (scripts/test.sh installs it; or set DAGSTER_BIN)",
)

# The cron aliases Meltano turns schedule intervals into (what Dagster then gets).
CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}


@pytest.fixture(scope="module")
def dagster_bin() -> Path:
    if not DAGSTER.exists():
        pytest.fail(
            f"Dagster not installed at {DAGSTER}: run bash scripts/test.sh ({INSTALL})",
            pytrace=False,
        )
    return DAGSTER


def _dagster_env(project: Path, dagster_home: Path, **extra: str) -> dict[str, str]:
    """Meltano's test environment plus the definitions' inputs; PATH without any `meltano`, so
    only MELTANO_BIN can lead the definitions to this project's Meltano."""
    env = _base_env()
    env["PATH"] = os.pathsep.join(
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if entry and not (Path(entry) / "meltano").exists()
    )
    dagster_home.mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "MELTANO_PROJECT_ROOT": str(project),
        "MELTANO_BIN": str(MELTANO.resolve()),
        "DAGSTER_HOME": str(dagster_home),
        **extra,
    }


def _dagster(
    dagster: Path, env: dict[str, str], cwd: Path, *args: str, timeout: float = 120
) -> str:
    result = subprocess.run(
        [str(dagster), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"dagster {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result.stdout + result.stderr  # Dagster logs its messages to stderr


def _dagster_python(dagster: Path, env: dict[str, str], cwd: Path, code: str) -> object:
    """JSON printed by `code` run in Dagster's tool venv."""
    result = subprocess.run(
        [str(dagster.parent / "python"), "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _dagster_name(name: str) -> str:
    return name.replace("-", "_")


@requires_meltano
@requires_dagster
def test_dagster_lists_meltano_jobs_and_schedules(dagster_bin, tmp_path):
    """meltano.yml's jobs and schedules, as Dagster's CLI and its definitions see them; a
    Meltano run that fails fails the Dagster run."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "meltano.yml", project / "meltano.yml")  # listing needs no plugins
    meltano_yml = yaml.safe_load((project / "meltano.yml").read_text(encoding="utf-8"))
    env = _dagster_env(project, tmp_path / "dagster-home")
    defs = ["-f", str(DEFINITIONS)]

    validated = _dagster(dagster_bin, env, tmp_path, "definitions", "validate", *defs)
    assert "Validation successful for code location dagster_definitions.py" in validated

    jobs = re.findall(
        r"^Job: (\S+)\n.*?^Ops: \(Execution Order\)\n((?:    \S+\n)+)",
        _dagster(dagster_bin, env, tmp_path, "job", "list", *defs),
        flags=re.MULTILINE | re.DOTALL,
    )
    expected_jobs = {
        _dagster_name(job["name"]): [_dagster_name(task.replace(" ", "_")) for task in job["tasks"]]
        for job in meltano_yml["jobs"]
    }
    assert {name: ops.split() for name, ops in jobs} == expected_jobs
    assert sorted(expected_jobs) == ["lake_part1", "lake_part2", "lake_part3"]

    listed = re.findall(
        r"^Schedule: (\S+) \[(\w+)\]\nCron Schedule: (.+)$",
        _dagster(dagster_bin, env, tmp_path, "schedule", "list", *defs),
        flags=re.MULTILINE,
    )
    expected = {
        _dagster_name(s["name"]): CRON_ALIASES.get(s["interval"], s["interval"])
        for s in meltano_yml["schedules"]
    }
    assert {name: cron for name, _status, cron in listed} == expected
    assert len(expected) == 3

    # Which job each schedule starts, from the loaded definitions themselves.
    loaded = _dagster_python(
        dagster_bin,
        env,
        tmp_path,
        "import json, runpy; defs = runpy.run_path("
        f"{str(DEFINITIONS)!r})['defs']; print(json.dumps("
        "{s.name: [s.job_name, s.cron_schedule] for s in defs.schedules}))",
    )
    assert loaded == {
        _dagster_name(s["name"]): [_dagster_name(s["job"]), expected[_dagster_name(s["name"])]]
        for s in meltano_yml["schedules"]
    }

    # A Meltano run that fails fails the Dagster run: here its plugins are not installed.
    failed = subprocess.run(
        [str(dagster_bin), "job", "execute", *defs, "-j", "lake_part1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert failed.returncode == 1
    assert "MeltanoCommandError: Command 'run tap-rapid7--part1 " in failed.stderr
    assert 'RUN_FAILURE - Execution of run for "lake_part1" failed.' in failed.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """meltano.yml and the distribution, in a temp directory, after `meltano install`."""
    root = tmp_path_factory.mktemp("meltano-dagster") / "project"
    copy_distribution_sources(root)
    shutil.copy(REPO / "meltano.yml", root / "meltano.yml")
    _meltano(root, _base_env(), "install")
    return root


@requires_meltano
@requires_dagster
def test_three_split_jobs_at_once_under_dagster_fill_one_table_exactly_once(
    dagster_bin, project, emulator_factory, tmp_path
):
    emu = emulator_factory(
        events_per_second=1.0, burst_probability=0.3, burst_size=40, polls_before_ready=1
    )
    end = (int(time.time() * 1000) // MINUTE - 5) * MINUTE  # safely in the past: all visible
    start = end - 10 * MINUTE
    parts = [f"tap-rapid7--part{n}" for n in (1, 2, 3)]
    logs = {part: _dev_log_ids(part) for part in parts}
    assert sorted(log for group in logs.values() for log in group) == sorted(emu.log_ids)
    lake = tmp_path / "iceberg-lake"
    env = _dagster_env(
        project,
        tmp_path / "dagster-home",
        TAP_RAPID7_BASE_URL=emu.base_url,
        TAP_RAPID7_START_DATE=_iso(start),
        TAP_RAPID7_END_DATE=_iso(end),
        TARGET_PARQUET_PARTS__ICEBERG_OUTPUT_DIR=str(lake),
    )

    # The instance's storage (runs, event index, schedules: SQLite under DAGSTER_HOME) made once,
    # before three processes share it: three fresh starts would race to create it.
    _dagster(dagster_bin, env, tmp_path, "instance", "migrate")
    jobs = {part: f"lake_part{part[-1]}" for part in parts}
    procs = {}
    for part, job in jobs.items():
        with (tmp_path / f"{job}.log").open("wb") as log:
            procs[part] = subprocess.Popen(
                [str(dagster_bin), "job", "execute", "-f", str(DEFINITIONS), "-j", job],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    try:
        codes = {part: proc.wait(timeout=240) for part, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs = {part: (tmp_path / f"{jobs[part]}.log").read_text() for part in parts}
    for part, code in codes.items():
        if code != 0:
            pytest.fail(f"{jobs[part]}: exit {code}\n{outputs[part][-6000:]}")
    for part in parts:  # each Dagster op ran this project's Meltano on its own task
        assert f"{MELTANO.resolve()} run {part} {SPLIT_LOADER} --force" in outputs[part]

    # Dagster's own record: three successful runs, one per job, in the shared instance, all
    # three running at one moment (each started before any ended).
    records = _dagster_python(
        dagster_bin,
        env,
        tmp_path,
        "import json; from dagster import DagsterInstance\n"
        "with DagsterInstance.get() as instance:\n"
        "    print(json.dumps(sorted([r.dagster_run.job_name, r.dagster_run.status.value,\n"
        "        r.start_time, r.end_time] for r in instance.get_run_records())))",
    )
    assert isinstance(records, list)
    runs = [record[:2] for record in records]
    assert runs == [[job, "SUCCESS"] for job in sorted(jobs.values())]
    started, ended = [record[2] for record in records], [record[3] for record in records]
    print(f"runs started {started}, ended {ended}")
    assert max(started) < min(ended)

    rows = scan(lake)
    columns = ["log_id", "timestamp", "sequence_number_str"]
    keys = list(zip(*(rows[name].to_pylist() for name in columns), strict=True))
    truth = emu.truth(start, end)
    assert sorted(keys) == sorted(truth)  # every event once: none lost, none twice
    per_job = {jobs[part]: sum(1 for key in keys if key[0] in logs[part]) for part in parts}
    assert all(per_job.values())
    assert duckdb_counts(lake) == (len(truth), len(truth))  # rows, distinct (log, sequence)

    history = summaries(lake)
    commit_runs = {s["singer.run-id"] for s in history if "singer.flush" in s}
    ends = {s["singer.run-id"] for s in history if s.get("singer.run-end") == "complete"}
    assert len(commit_runs) == 3
    assert ends == commit_runs

    # Each job kept its own Meltano state ID, as under `meltano run`.
    listed = _meltano(project, env, "state", "list").stdout.split()
    assert {f"dev:{part}-to-{SPLIT_LOADER}" for part in parts} <= set(listed)
    print(
        f"dagster: three jobs at once: records per job {per_job}; table rows {len(keys)}, "
        f"distinct {len(set(keys))}, truth {len(truth)}; runs {runs}"
    )
