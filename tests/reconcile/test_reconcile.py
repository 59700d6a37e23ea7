"""`tap-rapid7-reconcile` against datasets whose truth we control.

The dataset is written the way the target lays it out (`events/part-*.parquet`); the API side is
a counter over the same truth, so every difference the report shows is one the test planted. An
entry is `(log_id, timestamp, sequence_number_str)` (sequence numbers repeat across
milliseconds), on both sides.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_tools.reconcile import cli as reconcile_cli
from pipeline_tools.reconcile.cli import parse_duration, parse_time, reconcile
from pipeline_tools.reconcile.report import iso, render_json, render_table

HOUR = 3_600_000
START = 1_764_115_200_000  # 2025-11-26T00:00:00Z, hour aligned
SEQ_BASE = 3_237_201_778_429_120_512  # above 2**53, like the real API
LOGS = ["11111111-aaaa-4000-8000-000000000001", "22222222-bbbb-4000-8000-000000000002"]


def make_events(count_per_log: int = 240) -> list[dict]:
    """Events over two hours per log; several share a millisecond (like real bursts)."""
    events = []
    for log_index, log_id in enumerate(LOGS):
        for i in range(count_per_log):
            timestamp = START + (i // 3) * (2 * HOUR // (count_per_log // 3))
            events.append({
                "log_id": log_id,
                "timestamp": timestamp,
                "sequence_number_str": str(SEQ_BASE + log_index * 10**6 + i * 4096),
                "message": f"event {i}",
            })  # fmt: skip
    return events


def write_parts(root: Path, events: list[dict], per_part: int = 60) -> list[Path]:
    """Write events as the target does: events/part-<n>.parquet, fixed schema."""
    stream = root / "events"
    stream.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("log_id", pa.string()),
            ("timestamp", pa.int64()),
            ("sequence_number_str", pa.string()),
            ("message", pa.string()),
        ]
    )
    paths = []
    for n in range(0, len(events), per_part):
        path = stream / f"part-{n // per_part:04d}.parquet"
        pq.write_table(pa.Table.from_pylist(events[n : n + per_part], schema=schema), path)
        paths.append(path)
    return paths


def truth_counter(events: list[dict]):
    """The API side: how many distinct events of a log fall in [from, to)."""

    def count(log_id: str, from_ms: int, to_ms: int) -> int:
        return len(truth_keys(events)(log_id, from_ms, to_ms))

    return count


def truth_keys(events: list[dict]):
    """The API side of --list-keys: {(timestamp, sequence_number_str)} of a log in [from, to)."""

    def keys(log_id: str, from_ms: int, to_ms: int) -> set[tuple[int, str]]:
        return {
            (e["timestamp"], e["sequence_number_str"])
            for e in events
            if e["log_id"] == log_id and from_ms <= e["timestamp"] < to_ms
        }

    return keys


def test_clean_dataset_passes_every_window(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    report = reconcile(
        tmp_path,
        truth_counter(events),
        log_ids=LOGS,
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
    )
    assert report.ok
    assert [(w.log_id, w.window_from) for w in report.windows] == [
        (LOGS[0], START),
        (LOGS[0], START + HOUR),
        (LOGS[1], START),
        (LOGS[1], START + HOUR),
    ]
    assert sum(w.rows for w in report.windows) == len(events)
    assert all(w.api_count == w.rows == w.distinct > 0 for w in report.windows)
    assert "OK: every window matches" in render_table(report)
    assert json.loads(render_json(report))["ok"] is True


def test_broken_dataset_names_duplicated_part_missing_part_and_stray_row(tmp_path):
    events = make_events()
    parts = write_parts(tmp_path, events)
    # A duplicated part (a batch written twice), a missing part (lost), a stray row at `to`.
    shutil.copy(parts[1], parts[1].with_name("part-0001-copy.parquet"))
    lost = pq.read_table(parts[5]).to_pylist()
    parts[5].unlink()
    stray = dict(events[0], timestamp=START + 2 * HOUR, sequence_number_str="999")
    pq.write_table(pa.Table.from_pylist([stray]), tmp_path / "events" / "part-9999.parquet")

    report = reconcile(
        tmp_path,
        truth_counter(events),
        log_ids=LOGS,
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
    )

    assert not report.ok
    kinds = {kind for kind, _ in report.findings}
    assert kinds == {"duplicates", "missing", "outside"}
    text = render_table(report)
    assert "events/part-0001-copy.parquet, events/part-0001.parquet" in text
    assert "60 keys written 120 times across 2 parts" in text
    lost_log = lost[0]["log_id"]
    missing = [w for w in report.windows if w.missing]
    assert sum(w.missing for w in missing) == len(lost)
    assert {w.log_id for w in missing} == {lost_log}
    assert f"missing: log {lost_log}" in text
    assert "1 rows of log" in text
    assert "2025-11-26T02:00:00Z key 999 in events/part-9999.parquet" in text
    causes = text.split("Likely causes:")[1]
    assert "a window counted twice" in causes
    assert "a page delivered twice" in causes
    assert "an inclusive `to`" in causes
    assert "a part deleted" in causes
    assert "event's own time inside `message`" in text  # ingestion vs event time, always said
    document = json.loads(render_json(report))
    assert document["ok"] is False
    assert document["totals"]["duplicates"] == 60
    assert document["totals"]["missing"] == len(lost)
    assert document["totals"]["outside"] == 1
    assert document["duplicate_parts"][0]["parts"] == [
        "events/part-0001-copy.parquet",
        "events/part-0001.parquet",
    ]
    assert set(document["causes"]) == {"duplicates", "missing", "outside"}


def test_subset_checks_only_inside_the_range(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    strict = reconcile(
        tmp_path,
        truth_counter(events),
        log_ids=LOGS,
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
    )
    assert sum(strict.strays.values()) == len(events) - sum(w.rows for w in strict.windows) > 0
    assert {kind for kind, _ in strict.findings} == {"outside"}
    report = reconcile(
        tmp_path,
        truth_counter(events),
        log_ids=LOGS,
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
        subset=True,
    )
    assert report.ok
    assert [w.rows for w in report.windows] == [w.rows for w in strict.windows]
    assert "rows outside the range: not checked (--subset)" in render_table(report)


def test_extra_keys_when_the_api_counts_fewer(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    real = truth_counter(events)
    report = reconcile(
        tmp_path,
        lambda log, lo, hi: max(real(log, lo, hi) - 2, 0),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
    )
    assert [w.extra for w in report.windows] == [2, 2]
    assert {kind for kind, _ in report.findings} == {"extra"}


def test_default_range_is_the_datasets_own_span(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    report = reconcile(
        tmp_path,
        truth_counter(events),
        log_ids=None,
        from_ms=None,
        to_ms=None,
        window_ms=parse_duration("30m"),
    )
    assert report.from_ms == min(e["timestamp"] for e in events)
    assert report.to_ms == max(e["timestamp"] for e in events) + 1
    assert report.ok
    assert len(report.windows) == 2 * 4


def test_time_and_duration_parsing():
    assert parse_time("2025-11-26T00:00:00Z") == START
    assert parse_time("2025-11-26T01:00:00+01:00") == START
    assert parse_time("2025-11-26T00:00:00") == START
    assert parse_time(str(START)) == START
    assert parse_duration("1h") == HOUR
    assert parse_duration("900") == 900_000
    with pytest.raises(reconcile_cli.UsageError):
        parse_duration("soon")
    with pytest.raises(reconcile_cli.UsageError):
        parse_time("yesterday")


def test_config_from_env_and_files(tmp_path):
    path = tmp_path / "tap.json"
    path.write_text(json.dumps({"api_key": "from-file", "region": "eu"}))
    config = reconcile_cli.load_config(
        [str(path), "ENV"],
        environ={
            "TAP_RAPID7_API_KEY": "from-env",
            "TAP_RAPID7_LOG_IDS": '["a", "b"]',
            "TAP_RAPID7_PER_PAGE": "100",
            "OTHER": "x",
        },
    )
    assert (config.api_key, config.region, config.log_ids) == ("from-env", "eu", ("a", "b"))
    assert config.per_page == 100


def test_cli_exit_status_and_json(tmp_path, monkeypatch, capsys):
    events = make_events()
    parts = write_parts(tmp_path / "lake", events)
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "k", "log_ids": LOGS}))
    monkeypatch.setattr(
        reconcile_cli,
        "_client_counter",
        lambda cfg: (truth_counter(events), lambda: LOGS, "http://api"),
    )
    args = [
        "--config",
        str(config),
        "--dataset",
        str(tmp_path / "lake"),
        "--from",
        "2025-11-26T00:00:00Z",
        "--to",
        str(START + 2 * HOUR),
    ]
    assert reconcile_cli.main(args) == 0
    assert "OK: every window matches" in capsys.readouterr().out
    parts[0].unlink()
    assert reconcile_cli.main([*args, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["totals"]["missing"] == 60
    nowhere = ["--config", str(config), "--dataset", str(tmp_path / "nowhere")]
    assert reconcile_cli.main(nowhere) == 2
    assert "no events/ directory" in capsys.readouterr().err


def _an_api_that_fails_with_the_key(tmp_path, monkeypatch) -> list[str]:
    """A dataset, a config with a key, and an API whose error quotes it: the CLI's arguments."""
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "s3cret-key", "log_ids": LOGS}))
    write_parts(tmp_path / "lake", make_events())

    def failing(cfg):
        def count(*_):
            raise RuntimeError(f"401 for key {cfg.api_key}")

        return count, lambda: LOGS, "http://api"

    monkeypatch.setattr(reconcile_cli, "_client_counter", failing)
    return ["--config", str(config), "--dataset", str(tmp_path / "lake")]


def test_cli_never_prints_the_api_key_on_failure(tmp_path, monkeypatch, capsys):
    argv = _an_api_that_fails_with_the_key(tmp_path, monkeypatch)
    assert reconcile_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "could not check" in err
    assert "s3cret-key" not in err
    assert "[REDACTED]" in err


def test_key_lister_names_missing_and_extra_keys(tmp_path):
    events = make_events()
    parts = write_parts(tmp_path, events)
    lost = pq.read_table(parts[0]).to_pylist()
    parts[0].unlink()
    planted = dict(events[-1], sequence_number_str="77")  # a key the API does not know
    pq.write_table(pa.Table.from_pylist([planted]), tmp_path / "events" / "part-x.parquet")

    report = reconcile(
        tmp_path,
        truth_counter(events),
        log_ids=LOGS,
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
        key_lister=truth_keys(events),
    )
    missing = [key for w in report.windows for key in (w.missing_keys or [])]
    assert missing == sorted((r["timestamp"], r["sequence_number_str"]) for r in lost)[:20]
    extra = [key for w in report.windows for key in (w.extra_keys or [])]
    assert extra == [(planted["timestamp"], "77")]
    assert any("77 at" in sentence for _, sentence in report.findings)


# --------------------------------------------------------------------------- identity


def write_rows(path: Path, rows: list[dict], *, int_key: bool) -> None:
    """One part; with `int_key` also the int64 `sequence_number` column the tap writes."""
    schema = [
        ("log_id", pa.string()),
        ("timestamp", pa.int64()),
        ("sequence_number_str", pa.string()),
    ]
    if int_key:
        schema.append(("sequence_number", pa.int64()))
        rows = [dict(row, sequence_number=int(row["sequence_number_str"])) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(schema)), path)


@pytest.mark.parametrize("int_key", [True, False], ids=["int64-key", "string-key"])
def test_same_sequence_number_in_two_milliseconds_is_two_entries(tmp_path, int_key):
    # Rapid7 numbers entries per millisecond: `seq` 7 at t and `seq` 7 at t + 1 are two entries.
    seq = str(SEQ_BASE + 7)
    rows = [
        {"log_id": LOGS[0], "timestamp": START + 5, "sequence_number_str": seq},
        {"log_id": LOGS[0], "timestamp": START + 6, "sequence_number_str": seq},
        {"log_id": LOGS[0], "timestamp": START + HOUR + 1, "sequence_number_str": seq},
    ]
    write_rows(tmp_path / "events" / "part-a.parquet", rows[:2], int_key=int_key)
    write_rows(tmp_path / "events" / "part-b.parquet", rows[2:], int_key=int_key)
    report = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
    )
    assert [(w.api_count, w.rows, w.distinct, w.duplicates) for w in report.windows] == [
        (2, 2, 2, 0),
        (1, 1, 1, 0),
    ]
    assert report.ok
    assert report.duplicate_groups == []


@pytest.mark.parametrize("int_key", [True, False], ids=["int64-key", "string-key"])
def test_same_log_timestamp_and_sequence_number_twice_is_a_duplicate(tmp_path, int_key):
    seq = str(SEQ_BASE + 7)
    entry = {"log_id": LOGS[0], "timestamp": START + 5, "sequence_number_str": seq}
    neighbour = dict(entry, timestamp=START + 6)  # same seq, next millisecond: not a duplicate
    other_log = dict(entry, log_id=LOGS[1])  # same ts and seq in another log: not one either
    write_rows(
        tmp_path / "events" / "part-a.parquet", [entry, neighbour, other_log], int_key=int_key
    )
    write_rows(tmp_path / "events" / "part-b.parquet", [entry], int_key=int_key)
    truth = [entry, neighbour, other_log]
    report = reconcile(
        tmp_path,
        truth_counter(truth),
        log_ids=LOGS,
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
    )
    assert [(w.log_id, w.api_count, w.rows, w.distinct) for w in report.windows] == [
        (LOGS[0], 2, 3, 2),
        (LOGS[1], 1, 1, 1),
    ]
    [group] = report.duplicate_groups
    assert (group.keys, group.rows) == (1, 2)
    assert group.sample == [(LOGS[0], START + 5, seq)]
    assert [name.rsplit("/", 1)[1] for name in group.parts] == ["part-a.parquet", "part-b.parquet"]
    text = render_table(report)
    assert "1 keys written 2 times across 2 parts" in text
    assert f"{LOGS[0]}/2025-11-26T00:00:00.005Z/{seq}" in text
    assert "same log_id + timestamp + sequence_number_str" in text
    document = json.loads(render_json(report))
    assert document["duplicate_parts"][0]["sample"] == [[LOGS[0], START + 5, seq]]


def test_duplicate_inside_one_part(tmp_path):
    entry = {"log_id": LOGS[0], "timestamp": START + 5, "sequence_number_str": "12"}
    write_rows(tmp_path / "events" / "part-a.parquet", [entry, entry, entry], int_key=True)
    report = reconcile(
        tmp_path,
        truth_counter([entry]),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
    )
    [window] = report.windows
    assert (window.rows, window.distinct, window.duplicates) == (3, 1, 2)
    [group] = report.duplicate_groups
    assert (group.keys, group.rows, len(group.parts)) == (1, 3, 1)
    assert "inside one part" in render_table(report)


def test_a_null_int64_sequence_number_falls_back_to_the_string(tmp_path):
    # A part whose int64 column is empty must not merge its entries into one null key.
    rows = [
        {"log_id": LOGS[0], "timestamp": START + 5, "sequence_number_str": str(n)} for n in (1, 2)
    ]
    table = pa.Table.from_pylist(
        [dict(row, sequence_number=None) for row in rows],
        schema=pa.schema(
            [
                ("log_id", pa.string()),
                ("timestamp", pa.int64()),
                ("sequence_number_str", pa.string()),
                ("sequence_number", pa.int64()),
            ]
        ),
    )
    (tmp_path / "events").mkdir()
    pq.write_table(table, tmp_path / "events" / "part-a.parquet")
    report = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
    )
    assert [(w.rows, w.distinct) for w in report.windows] == [(2, 2)]
    assert report.ok


def test_key_lister_tells_apart_one_sequence_number_in_two_milliseconds(tmp_path):
    # The dataset has seq 9 at t; the API also has seq 9 at t + 1. Keyed by the sequence number
    # alone the two would be "the same key" and nothing would be reported missing.
    held = {"log_id": LOGS[0], "timestamp": START + 1, "sequence_number_str": "9"}
    lost = dict(held, timestamp=START + 2)
    write_rows(tmp_path / "events" / "part-a.parquet", [held], int_key=True)
    truth = [held, lost]
    report = reconcile(
        tmp_path,
        truth_counter(truth),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
        key_lister=truth_keys(truth),
    )
    [window] = report.windows
    assert window.missing == 1
    assert window.missing_keys == [(START + 2, "9")]
    assert window.extra_keys == []
    assert "9 at 2025-11-26T00:00:00.002Z" in render_table(report)


# --------------------------------------------------------------------------- time and settings


def test_parse_time_is_exact_to_the_millisecond_for_random_times():
    # Through a float (`timestamp() * 1000`) about 0.6% of these came out 1 ms early.
    rng = random.Random(20240315)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(5000):
        millis = rng.randrange(0, 4_102_444_800_000)  # 1970 .. 2100
        moment = epoch + timedelta(milliseconds=millis)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}"
        assert parse_time(text + "Z") == millis, text
        assert parse_time(text + "+00:00") == millis, text
        assert parse_time(text) == millis, text  # no zone: UTC
        shifted = (moment + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.")
        assert parse_time(shifted + f"{millis % 1000:03d}+02:00") == millis, text
        assert parse_time(iso(millis)) == millis, text  # and the report's times read back
    assert parse_time("2004-03-15T07:55:47.472Z") == 1_079_337_347_472


def test_lag_and_window_seconds_from_the_environment_are_numbers():
    config = reconcile_cli.load_config(
        ["ENV"],
        environ={
            "TAP_RAPID7_LAG_SECONDS": "0.5",
            "TAP_RAPID7_WINDOW_SECONDS": "900",
            "TAP_RAPID7_MAX_RETRIES": "3",
            "TAP_RAPID7_EVENT_TIME_FIELDS": '["timestamp", "re:^(\\\\S+),"]',
        },
    )
    assert (config.lag_seconds, config.window_seconds, config.max_retries) == (0.5, 900.0, 3)
    assert config.event_time_fields == ("timestamp", "re:^(\\S+),")


def test_a_setting_that_is_not_its_type_is_named():
    with pytest.raises(
        reconcile_cli.UsageError, match="TAP_RAPID7_MAX_RETRIES: expected an integer"
    ):
        reconcile_cli.load_config(["ENV"], environ={"TAP_RAPID7_MAX_RETRIES": "many"})


def test_durations_for_the_clock_options():
    assert parse_duration("60s", "--late-after") == 60_000
    assert parse_duration("0", "--late-after", allow_zero=True) == 0
    with pytest.raises(reconcile_cli.UsageError, match="--late-margin must look like"):
        parse_duration("an hour", "--late-margin")
    with pytest.raises(reconcile_cli.UsageError, match="--window"):
        parse_duration("0")


# --------------------------------------------------------------------------- the two clocks

MICROS = pa.timestamp("us", tz="UTC")  # how target-parquet-parts writes date-time columns
SECOND = 1000
MINUTE = 60 * SECOND
TARGET_SCHEMA = pa.schema([
    ("log_id", pa.string()), ("timestamp", pa.int64()), ("received_at", MICROS),
    ("event_time", MICROS), ("sequence_number", pa.int64()),
    ("sequence_number_str", pa.string()), ("message", pa.string()),
])  # fmt: skip
OLD_SCHEMA = pa.schema([  # before received_at: event_time held the receipt time
    ("log_id", pa.string()), ("timestamp", pa.int64()), ("event_time", MICROS),
    ("sequence_number_str", pa.string()), ("message", pa.string()),
])  # fmt: skip


def clock_row(log_id: str, received_ms: int, event_us: int | None, seq: int) -> dict:
    """A record as the tap writes it: receipt time twice (int ms, date-time), event time once."""
    return {
        "log_id": log_id,
        "timestamp": received_ms,
        "received_at": received_ms * 1000,
        "event_time": event_us,
        "sequence_number": seq,
        "sequence_number_str": str(seq),
        "message": f"entry {seq}",
    }


def write_target_part(path: Path, rows: list[dict], schema: pa.Schema = TARGET_SCHEMA) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    pq.write_table(pa.table(columns, schema=schema), path)


def ms(offset_ms: int) -> int:
    return START + offset_ms


def us(offset_ms: int, extra_us: int = 0) -> int:
    return (START + offset_ms) * 1000 + extra_us


# Log 0, checked over [START, START + 2h) hourly, late after 60 s, margin 1 h. Per row: where it
# is received (timestamp) and where its event_time falls.
CLOCK_ROWS = [
    # received W0, event W0 5 s earlier: both clocks agree
    clock_row(LOGS[0], ms(10 * MINUTE), us(10 * MINUTE - 5 * SECOND), 1),
    # received W1 at +30 s, event 90 s before the edge: late (120 s), across the window edge
    clock_row(LOGS[0], ms(HOUR + 30 * SECOND), us(HOUR - 90 * SECOND), 2),
    # received after the range (within the margin), event in W1: counted in W1 by event time
    clock_row(LOGS[0], ms(2 * HOUR + 20 * MINUTE), us(2 * HOUR - 10 * MINUTE), 3),
    # received 90 min after the range (beyond the margin), event in W1: not seen
    clock_row(LOGS[0], ms(3 * HOUR + 30 * MINUTE), us(HOUR + 5 * MINUTE), 4),
    # received W0 without an event time
    clock_row(LOGS[0], ms(30 * MINUTE), None, 5),
    # received W0, event 2 min after receipt (the source's clock runs ahead): early
    clock_row(LOGS[0], ms(40 * MINUTE), us(42 * MINUTE), 6),
    # received at the last ms of W0, event exactly at W1's start: event time in W1
    clock_row(LOGS[0], ms(HOUR - 1), us(HOUR), 7),
    # received W1, event 1 µs before W1's start: event time in W0 (exact to the microsecond)
    clock_row(LOGS[0], ms(HOUR + SECOND), us(HOUR, -1), 8),
    # received 10 min before the range (within the margin), event in W0: early, counted in W0
    clock_row(LOGS[0], ms(-10 * MINUTE), us(MINUTE), 9),
    # exactly 60 s late: not late (the threshold is "more than")
    clock_row(LOGS[0], ms(HOUR + 20 * MINUTE), us(HOUR + 19 * MINUTE), 10),
]


def write_clock_dataset(root: Path) -> list[dict]:
    write_target_part(root / "events" / "date=2025-11-26" / "part-a.parquet", CLOCK_ROWS[:5])
    write_target_part(root / "events" / "date=2025-11-26" / "part-b.parquet", CLOCK_ROWS[5:])
    return CLOCK_ROWS


def test_two_clocks_per_window_with_late_arrivals_across_the_edge(tmp_path):
    rows = write_clock_dataset(tmp_path)
    report = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
        subset=True,
        clocks=True,
        late_after_ms=60 * SECOND,
        late_margin_ms=HOUR,
    )
    assert report.ok  # the clocks inform, they never make a mismatch
    assert report.clocks is not None
    assert report.clocks.available
    figures = [
        (w.api_count, w.rows, c.by_event_time, c.both, c.no_event_time, c.late, c.early)
        for w in report.windows
        for c in [report.clock_counts(w)]
    ]
    assert figures == [
        # api rows  event-time  both  none  late  early
        (4, 4, 5, 2, 1, 0, 1),  # W0: rows 1 5 6 7 received; 1 2 6 8 9 by event time
        (3, 3, 3, 1, 0, 1, 0),  # W1: rows 2 8 10 received; 7 3 10 by event time (4 unseen)
    ]
    assert (report.clocks.read_from, report.clocks.read_to) == (START - HOUR, START + 3 * HOUR)
    assert report.clocks.rows_read == 9  # everything but row 4
    assert report.clocks.rows_with_event_time == 8
    assert report.clocks.parts_without_event_time == 0

    text = render_table(report)
    table = text.split("Two clocks")[1]
    assert "late>60s" in table
    assert "early>60s" in table
    legend = (
        "the API and this tap window by the time Rapid7 received an entry; consoles and SIEM "
        "searches usually filter by the event's own time; the difference is entries that "
        "arrived late (or early) relative to their own time"
    )
    assert legend.lower() in " ".join(table.lower().split())
    assert "events whose receipt is beyond the margin are not seen" in " ".join(table.split())
    assert "[2025-11-25T23:00:00Z, 2025-11-26T03:00:00Z)" in table
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "7", "7", "8", "3", "1", "1", "1"]

    section = json.loads(render_json(report))["clocks"]
    assert section["available"] is True
    assert section["late_after_seconds"] == 60
    assert section["late_margin_seconds"] == 3600
    assert section["totals"] == {
        "api_count": 7,
        "rows_by_received_at": 7,
        "rows_by_event_time": 8,
        "rows_in_both": 3,
        "no_event_time": 1,
        "late": 1,
        "early": 1,
    }
    assert section["windows"][1] == {
        "log_id": LOGS[0],
        "window_from": START + HOUR,
        "window_to": START + 2 * HOUR,
        "window_from_iso": "2025-11-26T01:00:00Z",
        "window_to_iso": "2025-11-26T02:00:00Z",
        "api_count": 3,
        "rows_by_received_at": 3,
        "rows_by_event_time": 3,
        "rows_in_both": 1,
        "no_event_time": 0,
        "late": 1,
        "early": 0,
    }
    assert "not read" in section["not_seen"]


def test_two_clocks_threshold_margin_and_short_windows(tmp_path):
    rows = write_clock_dataset(tmp_path)
    # A 0 s threshold: every row received after its event time is late, before it early.
    strict = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
        subset=True,
        clocks=True,
        late_after_ms=0,
        late_margin_ms=HOUR,
    )
    assert [(c.late, c.early) for w in strict.windows for c in [strict.clock_counts(w)]] == [
        (1, 2),
        (3, 0),
    ]  # W0: 1 late; 6, 7 early. W1: 2, 8, 10 late
    # No margin: row 3 (received after the range) and row 9 (before it) are not seen.
    narrow = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
        subset=True,
        clocks=True,
        late_after_ms=60 * SECOND,
        late_margin_ms=0,
    )
    assert [narrow.clock_counts(w).by_event_time for w in narrow.windows] == [4, 2]
    # 30-minute windows, clipped range [START + 15 min, START + 75 min).
    clipped = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=ms(15 * MINUTE),
        to_ms=ms(75 * MINUTE),
        window_ms=30 * MINUTE,
        subset=True,
        clocks=True,
        late_after_ms=60 * SECOND,
        late_margin_ms=HOUR,
    )
    assert [
        (w.window_from - START, w.rows, c.by_event_time, c.both)
        for w in clipped.windows
        for c in [clipped.clock_counts(w)]
    ] == [
        (15 * MINUTE, 0, 0, 0),  # nothing received or happened in [15, 30) min
        (30 * MINUTE, 3, 3, 1),  # rows 5, 6, 7 received; 6, 2, 8 by event time; 6 both
        (HOUR, 2, 1, 0),  # rows 2, 8 received; 7 by event time (4 is beyond the margin)
    ]


def test_old_dataset_counts_but_has_no_event_time(tmp_path):
    # Written before received_at existed: its event_time is the receipt time, not the event's.
    rows = [
        {
            "log_id": LOGS[0],
            "timestamp": ms(n * MINUTE),
            "event_time": ms(n * MINUTE) * 1000,
            "sequence_number_str": str(n),
            "message": "x",
        }
        for n in range(5)
    ]
    write_target_part(tmp_path / "events" / "part-old.parquet", rows, OLD_SCHEMA)
    report = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
        clocks=True,
    )
    assert report.ok
    assert [(w.api_count, w.rows, w.distinct) for w in report.windows] == [(5, 5, 5)]
    assert report.clocks is not None
    assert not report.clocks.available
    assert "the dataset has no event time" in report.clocks.reason
    assert "Two clocks: not available: the dataset has no event time" in render_table(report)
    document = json.loads(render_json(report))
    assert document["ok"] is True
    assert document["clocks"]["available"] is False
    assert "received_at" in document["clocks"]["reason"]


def test_mixed_dataset_counts_old_parts_as_without_event_time(tmp_path):
    rows = write_clock_dataset(tmp_path)
    old = {
        "log_id": LOGS[0],
        "timestamp": ms(5 * MINUTE),
        "event_time": ms(5 * MINUTE) * 1000,
        "sequence_number_str": "99",
        "message": "old",
    }
    write_target_part(tmp_path / "events" / "part-old.parquet", [old], OLD_SCHEMA)
    report = reconcile(
        tmp_path,
        truth_counter([*rows, old]),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + 2 * HOUR,
        window_ms=HOUR,
        subset=True,
        clocks=True,
    )
    assert report.ok
    first = report.clock_counts(report.windows[0])
    assert (report.windows[0].rows, first.by_event_time, first.no_event_time) == (5, 5, 2)
    assert report.clocks.parts_without_event_time == 1
    assert "1 part(s) were written by an older tap" in render_table(report)


def test_event_time_all_null_says_to_set_event_time_fields(tmp_path):
    rows = [clock_row(LOGS[0], ms(n * MINUTE), None, n) for n in range(3)]
    write_target_part(tmp_path / "events" / "part-a.parquet", rows)
    report = reconcile(
        tmp_path,
        truth_counter(rows),
        log_ids=[LOGS[0]],
        from_ms=START,
        to_ms=START + HOUR,
        window_ms=HOUR,
        clocks=True,
    )
    counts = report.clock_counts(report.windows[0])
    assert (counts.by_event_time, counts.no_event_time, counts.late) == (0, 3, 0)
    assert "set the tap's event_time_fields" in render_table(report)


def test_cli_clocks_text_json_and_bad_durations(tmp_path, monkeypatch, capsys):
    rows = write_clock_dataset(tmp_path / "lake")
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "k", "log_ids": [LOGS[0]]}))
    monkeypatch.setattr(
        reconcile_cli,
        "_client_counter",
        lambda cfg: (truth_counter(rows), lambda: [LOGS[0]], "http://api"),
    )
    args = [
        "--config",
        str(config),
        "--dataset",
        str(tmp_path / "lake"),
        "--subset",
        "--from",
        "2025-11-26T00:00:00Z",
        "--to",
        "2025-11-26T02:00:00Z",
    ]
    assert reconcile_cli.main(args) == 0
    assert "Two clocks" not in capsys.readouterr().out  # text: only with --clocks
    assert reconcile_cli.main([*args, "--clocks", "--late-after", "0", "--late-margin", "30m"]) == 0
    out = capsys.readouterr().out
    assert "late>0s" in out
    assert "the range plus 30m on each side (--late-margin)" in " ".join(out.split())
    assert reconcile_cli.main([*args, "--json"]) == 0  # JSON: always, with the defaults
    section = json.loads(capsys.readouterr().out)["clocks"]
    assert (section["late_after_seconds"], section["late_margin_seconds"]) == (60, 3600)
    assert section["totals"]["rows_by_event_time"] == 8
    assert reconcile_cli.main([*args, "--clocks", "--late-after", "a minute"]) == 2
    assert "--late-after must look like" in capsys.readouterr().err


def test_a_failure_traceback_only_at_debug_and_without_the_key(tmp_path, monkeypatch, capsys):
    argv = _an_api_that_fails_with_the_key(tmp_path, monkeypatch)
    assert reconcile_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().endswith("(--log-level DEBUG shows the traceback)")
    assert len(err.strip().splitlines()) == 1
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(sys.stderr)])
    assert reconcile_cli.main([*argv, "--log-level", "DEBUG"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: 401 for key [REDACTED]" in err
    assert "s3cret-key" not in err
