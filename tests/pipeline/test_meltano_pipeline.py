"""End to end through Meltano: `meltano install`, then `meltano run tap-rapid7 target-parquet-parts`
twice against the emulator; the dataset equals the emulator's ground truth and the second run adds
only the new events; `meltano state get` holds `next_from_millis` per log. Then the split jobs:
three `meltano run tap-rapid7--partN target-parquet-parts--iceberg` at once, each its own logs,
into one Iceberg table that `tap-rapid7-reconcile` checks against the API.

The project runs from a temporary copy of the repository's sources and `meltano.yml` (so
`pip_url: -e .` is exercised exactly as written and no `.meltano/` or output lands in the repo).
Settings come in through environment variables, which beat the `dev` environment's values: the
emulator's port, an explicit `start_date` and `end_date` (the second run moves `end_date` on, so
"new events" are exactly the ones in between, without waiting for the clock). The project is
copied and installed once for the module (the plugin venvs are what takes time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import yaml

from pipeline_tools.reconcile.cli import main as reconcile_main
from pipeline_tools.timeline import main as timeline_main
from tests.distribution_sources import copy_distribution_sources
from tests.e2e.pipeline import dataset_keys
from tests.meltano_cli import MELTANO, requires_meltano
from tests.target.iceberg_helpers import scan, summaries

pytestmark = pytest.mark.e2e


REPO = Path(__file__).resolve().parents[2]
STATE_ID = "dev:tap-rapid7-to-target-parquet-parts"
MINUTE = 60_000


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat()


def _base_env() -> dict[str, str]:
    env = {
        **os.environ,
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_ENVIRONMENT": "dev",
    }
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)  # Meltano builds its own plugin venvs; do not leak ours into them
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """meltano.yml and the distribution its `pip_url`s install (`-e .[extras]`), in a temp
    directory, after `meltano install` (once for the module's tests: each uses its own state
    IDs)."""
    root = tmp_path_factory.mktemp("meltano") / "project"
    copy_distribution_sources(root)
    shutil.copy(REPO / "meltano.yml", root / "meltano.yml")
    _meltano(root, _base_env(), "install")
    return root


def _meltano(
    project: Path, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(MELTANO), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"meltano {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


@requires_meltano
def test_meltano_install_run_twice_matches_truth_and_keeps_state(
    project, emulator_factory, tmp_path
):
    emu = emulator_factory(
        events_per_second=1.0, burst_probability=0.3, burst_size=40, polls_before_ready=1
    )
    end_2 = (int(time.time() * 1000) // MINUTE - 5) * MINUTE  # safely in the past: all visible
    end_1 = end_2 - 3 * MINUTE
    start = end_1 - 15 * MINUTE
    output_dir = tmp_path / "lake"
    env = {
        **_base_env(),
        "TAP_RAPID7_BASE_URL": emu.base_url,
        "TAP_RAPID7_START_DATE": _iso(start),
        "TAP_RAPID7_END_DATE": _iso(end_1),
        "TARGET_PARQUET_PARTS_OUTPUT_DIR": str(output_dir),
    }

    first_log = _meltano(project, env, "run", "tap-rapid7", "target-parquet-parts").stderr
    first = dataset_keys(output_dir)
    assert sorted(first) == sorted(emu.truth(start, end_1))
    assert len(first) > 500
    # The dev environment's event_time_fields find the emulator messages' own time: most rows
    # have one, earlier than (or equal to) when Rapid7 received them.
    clocks = ds.dataset(
        [str(p) for p in (output_dir / "events").rglob("part-*.parquet")], format="parquet"
    ).to_table(columns=["received_at", "event_time"])
    timed = clocks.filter(pc.is_valid(clocks["event_time"]))
    assert timed.num_rows > 0.9 * clocks.num_rows
    assert pc.all(pc.less_equal(timed["event_time"], timed["received_at"])).as_py()

    env["TAP_RAPID7_END_DATE"] = _iso(end_2)
    _meltano(project, env, "run", "tap-rapid7", "target-parquet-parts")
    second = dataset_keys(output_dir)
    new = emu.truth(end_1, end_2)
    assert len(second) - len(first) == len(new) > 0  # only the new events came
    assert sorted(second) == sorted(emu.truth(start, end_2))
    assert not [key for key, n in Counter(second).items() if n > 1]

    state = json.loads(_meltano(project, env, "state", "get", STATE_ID).stdout)
    partitions = state["singer_state"]["bookmarks"]["events"]["partitions"]
    next_from = {p["context"]["log_id"]: p["next_from_millis"] for p in partitions}
    assert next_from == dict.fromkeys(emu.log_ids, end_2)

    # The same dataset reconciles against the API's counts, and the run's log draws.
    config = tmp_path / "tap.json"
    config.write_text(
        json.dumps(
            {"api_key": emu.api_key, "base_url": emu.base_url, "poll_interval_seconds": 0.01}
        )
    )
    assert (
        reconcile_main(
            [
                "--config",
                str(config),
                "--dataset",
                str(output_dir),
                "--from",
                str(start),
                "--to",
                str(end_2),
                "--window",
                "5m",
            ]
        )
        == 0
    )
    invoked = _meltano(
        project,
        env,
        "invoke",
        "tap-rapid7:reconcile",
        "--dataset",
        str(output_dir),
        "--from",
        str(start),
        "--to",
        str(end_2),
        "--json",
    )
    assert json.loads(invoked.stdout)["totals"]["api_count"] == len(second)
    run_log = tmp_path / "run-1.log"
    run_log.write_text(first_log)
    png = tmp_path / "run-1.png"
    assert timeline_main([str(run_log), "-o", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    assert not (project / "demo-output").exists()  # the env's output_dir won over meltano.yml


SPLIT_LOADER = "target-parquet-parts--iceberg"


def _dev_log_ids(part: str) -> list[str]:
    """The `log_ids` meltano.yml's dev environment gives one split job."""
    project = yaml.safe_load((REPO / "meltano.yml").read_text(encoding="utf-8"))
    dev = next(env for env in project["environments"] if env["name"] == "dev")
    plugins = dev["config"]["plugins"]["extractors"]
    return next(p["config"]["log_ids"] for p in plugins if p["name"] == part)


@requires_meltano
def test_three_split_jobs_at_once_fill_one_iceberg_table_exactly_once(
    project, emulator_factory, tmp_path
):
    emu = emulator_factory(
        events_per_second=1.0, burst_probability=0.3, burst_size=40, polls_before_ready=1
    )
    end = (int(time.time() * 1000) // MINUTE - 5) * MINUTE
    start = end - 10 * MINUTE
    parts = [f"tap-rapid7--part{n}" for n in (1, 2, 3)]
    logs = {part: _dev_log_ids(part) for part in parts}
    # The dev split covers the emulator's logs (seed 7), each log in exactly one job.
    assert sorted(log for group in logs.values() for log in group) == sorted(emu.log_ids)
    lake = tmp_path / "iceberg-lake"
    env = {
        **_base_env(),
        "TAP_RAPID7_BASE_URL": emu.base_url,
        "TAP_RAPID7_START_DATE": _iso(start),
        "TAP_RAPID7_END_DATE": _iso(end),
        # The loader variant's own variable: it beats the dev environment's demo-output/lake.
        "TARGET_PARQUET_PARTS__ICEBERG_OUTPUT_DIR": str(lake),
    }
    procs = []
    for part in parts:
        with (tmp_path / f"{part}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [str(MELTANO), "run", part, SPLIT_LOADER],
                    cwd=project,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for part, code in zip(parts, codes, strict=True):
        if code != 0:
            pytest.fail(f"{part}: exit {code}\n{(tmp_path / f'{part}.log').read_text()[-6000:]}")

    rows = scan(lake)
    columns = ["log_id", "timestamp", "sequence_number_str"]
    keys = list(zip(*(rows[name].to_pylist() for name in columns), strict=True))
    truth = emu.truth(start, end)
    assert sorted(keys) == sorted(truth)  # every event once: none lost, none twice
    per_job = {part: sum(1 for key in keys if key[0] in logs[part]) for part in parts}
    assert all(per_job.values())

    # The table's history: each job's own commits (its run id, flushes 1..n) and its end marker.
    history = summaries(lake)
    commits = [s for s in history if "singer.flush" in s]
    runs = {s["singer.run-id"] for s in commits}
    assert len(runs) == 3
    ends = [s for s in history if s.get("singer.run-end") == "complete"]
    assert {s["singer.run-id"] for s in ends} == runs
    for run in runs:
        flushes = [int(s["singer.flush"]) for s in commits if s["singer.run-id"] == run]
        assert flushes == list(range(1, len(flushes) + 1))

    # Each job has its own state ID (plugin names differ).
    listed = _meltano(project, env, "state", "list").stdout.split()
    assert {f"dev:{part}-to-{SPLIT_LOADER}" for part in parts} <= set(listed)

    # The API's counts against the table: in-process, then through Meltano (the lake plugin's
    # venv has pyiceberg; --table-format auto finds catalog.db).
    config = tmp_path / "tap.json"
    config.write_text(
        json.dumps(
            {"api_key": emu.api_key, "base_url": emu.base_url, "poll_interval_seconds": 0.01}
        )
    )
    window = ["--from", str(start), "--to", str(end), "--window", "5m"]
    assert reconcile_main(["--config", str(config), "--dataset", str(lake), *window]) == 0
    invoked = _meltano(
        project, env, "invoke", "tap-rapid7--lake:reconcile", "--dataset", str(lake), *window
    )
    text = invoked.stdout
    assert "Iceberg table singer.events, snapshot" in text
    assert "OK: every window matches" in text
    [total] = [line for line in text.splitlines() if line.startswith("total")]
    assert total.split()[1:6] == [str(len(truth)), str(len(truth)), str(len(truth)), "0", "0"]
    retries = sum(
        (tmp_path / f"{part}.log").read_text().count("iceberg_commit_retry ") for part in parts
    )
    print(
        f"three split jobs: events per job {per_job}, total {len(keys)}; "
        f"events table: {len(commits)} commits from {len(runs)} runs, {len(ends)} run ends, "
        f"{len(history)} snapshots; {retries} commit retries (all streams)\n{total}"
    )
