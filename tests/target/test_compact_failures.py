"""target-parquet-parts-compact: every failure ends with one clear line and a meaningful exit.

Lost commit races are real: a rival writer commits to the table (a property update, through its
own catalog handle) between the compaction staging its snapshot and committing it, so every
attempt's commit is refused by the SQLite catalog with pyiceberg's ``CommitFailedException``.
The seam is the ``stage_snapshot`` the compaction calls; the backoff waits are recorded instead
of slept.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.table.update import AssertRefSnapshotId

from target_parquet_parts import compact, compact_cli, iceberg_commits, iceberg_expiry
from target_parquet_parts.arrow_schema import stream_spec
from target_parquet_parts.columns import build_table
from target_parquet_parts.iceberg_commits import COMMIT_ATTEMPTS
from tests.target.conftest import run_target
from tests.target.iceberg_helpers import ICEBERG, key_multiset, live_files, open_table, scan
from tests.target.singer_data import (
    EVENTS_SCHEMA,
    event,
    record_message,
    schema_message,
    state_message,
)

REPO = Path(__file__).resolve().parents[2]
PREFIX = "target-parquet-parts-compact: "
DAY = 86_400
RIVAL_EVENTS = 3 * DAY  # the rival writes into a later day than the compacted ones


class RacingWriter:
    """Appends a row to ``table`` after each compaction attempt staged and before it commits."""

    def __init__(self, out: Path, table: str = "events") -> None:
        self.out = out
        self.table = table
        self.staged = 0  # the compaction's attempts on this table (= the rival's commits)
        self.waits: list[float] = []  # the backoff waits between them (recorded, not slept)

    def install(self, patch: pytest.MonkeyPatch) -> None:
        def stage_then_lose_the_race(transaction: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
            iceberg_commits.stage_snapshot(transaction, *args, **kwargs)
            if transaction.table_metadata.location.endswith(f"/{self.table}"):
                self.staged += 1
                self._commit_a_row()

        patch.setattr(compact, "stage_snapshot", stage_then_lose_the_race)
        patch.setattr(iceberg_commits.time, "sleep", self.waits.append)

    def _commit_a_row(self) -> None:
        with open_table(self.out, self.table) as rival:
            rows = build_table([event(RIVAL_EVENTS + self.staged)], stream_spec(EVENTS_SCHEMA))
            files = list(_dataframe_to_data_files(rival.metadata, rows, rival.io))
            transaction = rival.transaction()
            iceberg_commits.stage_snapshot(transaction, {"rival-commit": str(self.staged)}, files)
            transaction.commit_transaction()


def run_with_conflicts(argv: list[str]) -> int:
    """The command with a racing writer on ``events`` (the subprocess tests' entry point)."""
    out = Path(json.loads(Path(argv[argv.index("--config") + 1]).read_text())["output_dir"])
    with pytest.MonkeyPatch.context() as patch:
        RacingWriter(out).install(patch)
        return compact_cli.main(argv)


def _two_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """``events`` and ``other``, each four small files over two closed days; (out, config)."""
    out = tmp_path / "out"
    lines = [schema_message("events"), schema_message("other")]
    for i in [d * DAY + k for d in range(2) for k in range(40)]:
        lines += [record_message(event(i), "events"), record_message(event(i), "other")]
    lines.append(state_message({"done": True}))
    run_target(
        out, lines, monkeypatch, batch_size_rows=20, partition_date_field="event_time", **ICEBERG
    )
    return out, _config(tmp_path, out)


def _config(tmp_path: Path, out: Path | str, **settings: t.Any) -> Path:
    config = tmp_path / "target.json"
    config.write_text(json.dumps({"output_dir": str(out), **ICEBERG, **settings}))
    return config


def _physical_data_files(out: Path, table: str) -> int:
    return sum(1 for _ in (out / "singer" / table / "data").rglob("*.parquet"))


def _our_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(PREFIX)]


def test_lost_race_ends_with_one_line_and_the_other_tables_are_compacted(
    tmp_path, monkeypatch, capsys, caplog
):
    out, config = _two_tables(tmp_path, monkeypatch)
    events_files, events_rows = live_files(out), key_multiset(scan(out))
    physical = _physical_data_files(out, "events")
    racer = RacingWriter(out)
    racer.install(monkeypatch)
    caplog.set_level(logging.INFO)

    code = compact_cli.main(["--config", str(config), "--before", "2030-01-01"])

    captured = capsys.readouterr()
    assert code == 1
    assert racer.staged == COMMIT_ATTEMPTS == compact_cli.COMMIT_ATTEMPTS == 12
    assert len(racer.waits) == COMMIT_ATTEMPTS - 1
    [line] = _our_lines(captured.err)
    assert "singer.events" in line
    assert "12 attempts" in line
    assert "rerun later" in line.lower()
    assert "--commit-attempts" in line
    assert "Traceback" not in captured.err
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    # the lost table has its files and the rival's rows; the rewritten files are deleted again
    after = live_files(out)
    assert set(events_files) <= set(after)
    assert len(after) == len(events_files) + racer.staged
    rows = key_multiset(scan(out))
    assert len(rows) == len(events_rows) + racer.staged == len(set(rows))
    assert _physical_data_files(out, "events") == physical + racer.staged
    # the other table was compacted: its summary is the one JSON line on stdout
    [summary] = [json.loads(line) for line in captured.out.splitlines()]
    assert summary["table"] == "singer.other"
    assert summary["rewritten_files"] == 4
    assert summary["files_after"] == 2
    assert len(live_files(out, "other")) == 2


def test_lost_expiry_race_keeps_the_compaction_and_says_so(tmp_path, monkeypatch, capsys):
    out, config = _two_tables(tmp_path, monkeypatch)
    racer = RacingWriter(out)
    expiries: list[int] = []

    class RacedExpiry:
        """pyiceberg's expiry, asserting the head it saw; the rival commits before it commits.

        pyiceberg's snapshot expiry asserts nothing about the head, so appends never conflict
        with it in the SQLite catalog; the assertion (what a stricter catalog checks) makes the
        rival's commit a real conflict the catalog refuses.
        """

        def __init__(self, transaction: t.Any) -> None:
            self.transaction = transaction
            self.inner = original(transaction)

        def by_ids(self, ids: list[int]) -> RacedExpiry:
            self.inner = self.inner.by_ids(ids)
            return self

        def commit(self) -> None:
            self.inner.commit()
            head = self.transaction.table_metadata.current_snapshot_id
            self.transaction._apply((), (AssertRefSnapshotId(ref="main", snapshot_id=head),))
            expiries.append(1)
            racer.staged += 1
            racer._commit_a_row()

    original = iceberg_expiry.ExpireSnapshots
    monkeypatch.setattr(iceberg_expiry, "ExpireSnapshots", RacedExpiry)
    monkeypatch.setattr(iceberg_commits.time, "sleep", racer.waits.append)

    argv = ["--config", str(config), "--before", "2030-01-01", "--stream", "events"]
    code = compact_cli.main([*argv, "--retain-hours", "0", "--commit-attempts", "2"])

    captured = capsys.readouterr()
    assert code == 1
    assert len(expiries) == 2
    [line] = _our_lines(captured.err)
    assert line == (
        f"{PREFIX}singer.events old snapshots not expired (its compaction, if any, stays "
        "committed): other writers committed first in all 2 attempts; rerun later, off the "
        "writers' busy minutes, or raise --commit-attempts (now 2)"
    )
    [summary] = [json.loads(row) for row in captured.out.splitlines()]
    assert summary["rewritten_files"] == 4
    assert summary["expired_snapshots"] == 0
    assert len(live_files(out)) == 2 + racer.staged  # compacted, plus the rival's rows


@pytest.mark.parametrize("attempts", [1, 3])
def test_commit_attempts_sets_how_often_a_commit_is_tried(tmp_path, monkeypatch, capsys, attempts):
    out, config = _two_tables(tmp_path, monkeypatch)
    racer = RacingWriter(out)
    racer.install(monkeypatch)

    argv = ["--config", str(config), "--before", "2030-01-01", "--stream", "events"]
    code = compact_cli.main([*argv, "--commit-attempts", str(attempts)])

    assert code == 1
    assert racer.staged == attempts
    assert len(racer.waits) == attempts - 1
    [line] = _our_lines(capsys.readouterr().err)
    assert f"{attempts} attempts" in line or f"{attempts} attempt" in line
    assert "singer.events" in line


def test_commit_attempts_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        compact_cli.main(["--config", str(_config(tmp_path, tmp_path)), "--commit-attempts", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--commit-attempts" in err
    assert "at least 1" in err


@pytest.mark.e2e
def test_lost_race_from_the_shell_shows_no_traceback_unless_debug(tmp_path, monkeypatch):
    """The real stderr of the command: retry events, then the one line; the traceback at DEBUG."""
    _, config = _two_tables(tmp_path, monkeypatch)
    driver = (
        "import sys\n"
        "from tests.target.test_compact_failures import run_with_conflicts\n"
        "sys.exit(run_with_conflicts(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", driver, "--config", str(config), "--before", "2030-01-01"]
    argv += ["--stream", "events", "--commit-attempts", "2"]

    run: dict[str, t.Any] = {"capture_output": True, "text": True, "cwd": REPO, "timeout": 120}
    default = subprocess.run(argv, check=False, **run)
    debug = subprocess.run([*argv, "--log-level", "DEBUG"], check=False, **run)

    assert default.returncode == 1, default.stderr
    assert "Traceback" not in default.stderr
    assert "iceberg_commit_retry" in default.stderr  # the retries stay visible at INFO
    [line] = _our_lines(default.stderr)
    assert default.stderr.rstrip("\n").splitlines()[-1] == line
    assert "singer.events" in line
    assert "2 attempts" in line
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "CommitFailedException" in debug.stderr
    assert debug.stderr.rstrip("\n").splitlines()[-1] == line


def test_empty_output_dir_names_the_missing_namespace_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()

    code = compact_cli.main(["--config", str(_config(tmp_path, out))])

    err = capsys.readouterr().err
    assert code == 2
    [line] = _our_lines(err)
    assert err == line + "\n"
    assert "namespace singer" in line
    assert str(out) in line
    assert list(out.iterdir()) == []  # no catalog.db created


def test_namespace_missing_from_an_existing_catalog_is_named(tmp_path, monkeypatch, capsys):
    out, _ = _two_tables(tmp_path, monkeypatch)
    config = _config(tmp_path, out, iceberg_namespace="nightly")

    code = compact_cli.main(["--config", str(config)])

    err = capsys.readouterr().err
    assert code == 2
    [line] = _our_lines(err)
    assert err == line + "\n"
    assert "namespace nightly" in line
    assert str(out) in line


def test_unknown_stream_names_the_missing_table_and_compacts_nothing(tmp_path, monkeypatch, capsys):
    out, config = _two_tables(tmp_path, monkeypatch)
    files = live_files(out)

    code = compact_cli.main(
        [
            "--config",
            str(config),
            "--before",
            "2030-01-01",
            "--stream",
            "events",
            "--stream",
            "nope",
        ]
    )

    captured = capsys.readouterr()
    assert code == 2
    [line] = _our_lines(captured.err)
    assert captured.err == line + "\n"
    assert "singer.nope" in line
    assert str(out) in line
    assert "singer.events" in line  # what does exist, against a typo
    assert captured.out == ""
    assert live_files(out) == files


def test_unknown_stream_on_an_empty_output_dir_names_the_table(tmp_path, capsys):
    out = tmp_path / "out"

    code = compact_cli.main(["--config", str(_config(tmp_path, out)), "--stream", "nope"])

    [line] = _our_lines(capsys.readouterr().err)
    assert code == 2
    assert "singer.nope" in line
    assert str(out) in line
    assert not out.exists()


def test_object_storage_output_dir_without_a_catalog_is_one_line(tmp_path, capsys):
    code = compact_cli.main(["--config", str(_config(tmp_path, "s3://bucket/lake"))])

    err = capsys.readouterr().err
    assert code == 2
    [line] = _our_lines(err)
    assert err == line + "\n"
    assert "iceberg_catalog" in line
