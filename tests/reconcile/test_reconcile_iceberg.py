"""`tap-rapid7-reconcile` reading an Iceberg table that the real target process wrote.

The target (`table_format: iceberg`, a real process, small batches so the table has several
data files and snapshots) loads known events with the tap's own SCHEMA; the API side is a counter
over the same truth. Then the table is damaged through pyiceberg directly, the way another
writer could: a row appended a second time must be reported as a duplicate naming both data
files, a deleted row as missing.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyiceberg.expressions import EqualTo

from pipeline_tools.reconcile import cli as reconcile_cli
from pipeline_tools.reconcile.cli import reconcile
from pipeline_tools.reconcile.iceberg_source import IcebergSource
from pipeline_tools.reconcile.report import render_json, render_table
from tap_rapid7.logsearch.records import EVENTS_KEY_PROPERTIES, EVENTS_SCHEMA
from tests.reconcile.test_reconcile import HOUR, LOGS, START, make_events, truth_counter
from tests.target.conftest import TARGET_BIN
from tests.target.iceberg_helpers import open_table, summaries

EVENT_LAG = timedelta(seconds=30)  # each event's own time, this long before Rapid7 received it


def _iso(millis: int, lag: timedelta = timedelta(0)) -> str:
    return (datetime.fromtimestamp(millis / 1000, tz=UTC) - lag).isoformat()


def singer_lines(events: list[dict]) -> list[str]:
    """The tap's SCHEMA and a RECORD per event (the tap's columns), a STATE every 100."""
    lines = [
        json.dumps(
            {
                "type": "SCHEMA",
                "stream": "events",
                "schema": EVENTS_SCHEMA,
                "key_properties": list(EVENTS_KEY_PROPERTIES),
            }
        )
    ]
    for n, event in enumerate(events, start=1):
        record = {
            **event,
            "sequence_number": int(event["sequence_number_str"]),
            "received_at": _iso(event["timestamp"]),
            "event_time": _iso(event["timestamp"], EVENT_LAG),
        }
        lines.append(json.dumps({"type": "RECORD", "stream": "events", "record": record}))
        if n % 100 == 0:
            lines.append(json.dumps({"type": "STATE", "value": {"n": n}}))
    return lines


def write_table(root: Path) -> tuple[Path, list[dict]]:
    """(output_dir, events): the target process's Iceberg table of `make_events()`."""
    out = root / "lake"
    events = make_events()
    config = root / "target.json"
    config.write_text(
        json.dumps(
            {
                "output_dir": str(out),
                "table_format": "iceberg",
                "partition_date_field": "received_at",
                "batch_size_rows": 100,
            }
        )
    )
    result = subprocess.run(
        [TARGET_BIN, "--config", str(config)],
        input="".join(line + "\n" for line in singer_lines(events)).encode(),
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert (out / "catalog.db").is_file()
    return out, events


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The table the target wrote, shared by the tests that only read it."""
    return write_table(tmp_path_factory.mktemp("iceberg-reconcile"))


@pytest.fixture
def lake(tmp_path) -> tuple[Path, list[dict]]:
    """A table of this test's own, free to damage (the catalog names absolute locations, so a
    copy of another would still point at the original's files)."""
    return write_table(tmp_path)


def _check(out: Path, events: list[dict], **options) -> object:
    with IcebergSource.open(str(out), stream="events") as source:
        return reconcile(
            out,
            truth_counter(events),
            log_ids=LOGS,
            from_ms=START,
            to_ms=START + 2 * HOUR,
            window_ms=HOUR,
            iceberg=source,
            **options,
        )


def test_the_targets_iceberg_table_matches_every_window(written):
    out, events = written
    report = _check(out, events, clocks=True)
    assert report.ok, render_table(report)
    assert sum(w.rows for w in report.windows) == len(events)
    assert all(w.api_count == w.rows == w.distinct > 0 for w in report.windows)
    assert report.parts >= 5  # five flushes of 100 rows (more when a flush spans two days)
    text = render_table(report)
    assert "Iceberg table singer.events, snapshot" in text
    assert "OK: every window matches" in text
    # The event time came through the table too: every row 30 s before its receipt.
    assert report.clocks is not None
    assert report.clocks.available
    assert report.clocks.rows_with_event_time == report.clocks.rows_read
    assert json.loads(render_json(report))["source"].startswith("Iceberg table singer.events")


def test_a_row_appended_again_is_a_duplicate_naming_both_data_files(lake):
    out, events = lake
    victim = events[7]
    with open_table(out) as table:
        row = table.scan(row_filter=EqualTo("sequence_number_str", victim["sequence_number_str"]))
        again = row.to_arrow()
        assert again.num_rows == 1
        table.append(again)  # a second writer delivering the same entry
    report = _check(out, events)
    assert not report.ok
    [group] = report.duplicate_groups
    assert (group.keys, group.rows) == (1, 2)
    assert len(group.parts) == 2  # the target's data file and the one appended
    assert group.sample == [(victim["log_id"], victim["timestamp"], victim["sequence_number_str"])]
    assert sum(w.duplicates for w in report.windows) == 1
    assert not [w for w in report.windows if w.missing or w.extra]
    text = render_table(report)
    assert "duplicate part: 1 keys written 2 times across 2 parts" in text
    # The data files, named within the dataset (the table's location is <warehouse>/singer/events).
    assert ": singer/events/data/received_at_day=2025-11-26/" in text
    appends = [s for s in summaries(out) if "singer.run-id" not in s]
    assert [s["operation"] for s in appends] == ["append"]  # ours, beside the target's commits


def test_a_deleted_row_is_missing_and_the_cli_finds_the_table_by_itself(
    lake, tmp_path, monkeypatch, capsys
):
    out, events = lake
    victim = events[-1]
    with open_table(out) as table:
        table.delete(EqualTo("sequence_number_str", victim["sequence_number_str"]))
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "k", "log_ids": LOGS}))
    monkeypatch.setattr(
        reconcile_cli,
        "_client_counter",
        lambda cfg: (truth_counter(events), lambda: LOGS, "http://api"),
    )
    args = ["--config", str(config), "--dataset", str(out), "--from", str(START)]
    args += ["--to", str(START + 2 * HOUR)]
    assert reconcile_cli.main([*args, "--json"]) == 1  # --table-format auto: catalog.db
    document = json.loads(capsys.readouterr().out)
    assert document["totals"]["missing"] == 1
    assert document["source"].startswith("Iceberg table singer.events, snapshot ")
    assert reconcile_cli.main([*args, "--iceberg-namespace", "other"]) == 2
    assert "no Iceberg table other.events" in capsys.readouterr().err
    assert reconcile_cli.main([*args, "--table-format", "parquet"]) == 2
    assert "no events/ directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = ["--config", str(config), "--dataset", str(empty), "--table-format", "iceberg"]
    assert reconcile_cli.main(bare) == 2
    assert "no catalog.db" in capsys.readouterr().err
    assert not (empty / "catalog.db").exists()  # a check never creates a catalog
