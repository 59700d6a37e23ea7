"""`tap-rapid7-reconcile` against datasets whose truth we control.

The dataset is written the way the target lays it out (`events/part-*.parquet`); the API side is
a counter over the same truth, so every difference the report shows is one the test planted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tap_rapid7 import reconcile as reconcile_cli
from tap_rapid7.reconcile import parse_duration, parse_time, reconcile
from tap_rapid7.reconcile_report import render_json, render_table

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
    schema = pa.schema([("log_id", pa.string()), ("timestamp", pa.int64()),
                        ("sequence_number_str", pa.string()), ("message", pa.string())])
    paths = []
    for n in range(0, len(events), per_part):
        path = stream / f"part-{n // per_part:04d}.parquet"
        pq.write_table(pa.Table.from_pylist(events[n:n + per_part], schema=schema), path)
        paths.append(path)
    return paths


def truth_counter(events: list[dict]):
    """The API side: how many distinct events of a log fall in [from, to)."""
    def count(log_id: str, from_ms: int, to_ms: int) -> int:
        return len({e["sequence_number_str"] for e in events
                    if e["log_id"] == log_id and from_ms <= e["timestamp"] < to_ms})
    return count


def test_clean_dataset_passes_every_window(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    report = reconcile(tmp_path, truth_counter(events), log_ids=LOGS, from_ms=START,
                       to_ms=START + 2 * HOUR, window_ms=HOUR)
    assert report.ok
    assert [(w.log_id, w.window_from) for w in report.windows] == [
        (LOGS[0], START), (LOGS[0], START + HOUR), (LOGS[1], START), (LOGS[1], START + HOUR)]
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

    report = reconcile(tmp_path, truth_counter(events), log_ids=LOGS, from_ms=START,
                       to_ms=START + 2 * HOUR, window_ms=HOUR)

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
        "events/part-0001-copy.parquet", "events/part-0001.parquet"]
    assert set(document["causes"]) == {"duplicates", "missing", "outside"}


def test_subset_checks_only_inside_the_range(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    strict = reconcile(tmp_path, truth_counter(events), log_ids=LOGS, from_ms=START,
                       to_ms=START + HOUR, window_ms=HOUR)
    assert sum(strict.strays.values()) == len(events) - sum(w.rows for w in strict.windows) > 0
    assert {kind for kind, _ in strict.findings} == {"outside"}
    report = reconcile(tmp_path, truth_counter(events), log_ids=LOGS, from_ms=START,
                       to_ms=START + HOUR, window_ms=HOUR, subset=True)
    assert report.ok
    assert [w.rows for w in report.windows] == [w.rows for w in strict.windows]
    assert "rows outside the range: not checked (--subset)" in render_table(report)


def test_extra_keys_when_the_api_counts_fewer(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    real = truth_counter(events)
    report = reconcile(tmp_path, lambda log, lo, hi: max(real(log, lo, hi) - 2, 0),
                       log_ids=[LOGS[0]], from_ms=START, to_ms=START + 2 * HOUR, window_ms=HOUR)
    assert [w.extra for w in report.windows] == [2, 2]
    assert {kind for kind, _ in report.findings} == {"extra"}


def test_default_range_is_the_datasets_own_span(tmp_path):
    events = make_events()
    write_parts(tmp_path, events)
    report = reconcile(tmp_path, truth_counter(events), log_ids=None, from_ms=None, to_ms=None,
                       window_ms=parse_duration("30m"))
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
        environ={"TAP_RAPID7_API_KEY": "from-env", "TAP_RAPID7_LOG_IDS": '["a", "b"]',
                 "TAP_RAPID7_PER_PAGE": "100", "OTHER": "x"},
    )
    assert config == {"api_key": "from-env", "region": "eu", "log_ids": ["a", "b"],
                      "per_page": 100}


def test_cli_exit_status_and_json(tmp_path, monkeypatch, capsys):
    events = make_events()
    parts = write_parts(tmp_path / "lake", events)
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "k", "log_ids": LOGS}))
    monkeypatch.setattr(reconcile_cli, "_client_counter",
                        lambda cfg: (truth_counter(events), lambda: LOGS, "http://api"))
    args = ["--config", str(config), "--dataset", str(tmp_path / "lake"),
            "--from", "2025-11-26T00:00:00Z", "--to", str(START + 2 * HOUR)]
    assert reconcile_cli.main(args) == 0
    assert "OK: every window matches" in capsys.readouterr().out
    parts[0].unlink()
    assert reconcile_cli.main([*args, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["totals"]["missing"] == 60
    nowhere = ["--config", str(config), "--dataset", str(tmp_path / "nowhere")]
    assert reconcile_cli.main(nowhere) == 2
    assert "no events/ directory" in capsys.readouterr().err


def test_cli_never_prints_the_api_key_on_failure(tmp_path, monkeypatch, capsys):
    config = tmp_path / "tap.json"
    config.write_text(json.dumps({"api_key": "s3cret-key", "log_ids": LOGS}))
    write_parts(tmp_path / "lake", make_events())

    def failing(cfg):
        def count(*_):
            raise RuntimeError(f"401 for key {cfg['api_key']}")
        return count, lambda: LOGS, "http://api"

    monkeypatch.setattr(reconcile_cli, "_client_counter", failing)
    assert reconcile_cli.main(["--config", str(config), "--dataset", str(tmp_path / "lake")]) == 2
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

    def api_keys(log_id, lo, hi):
        return {e["sequence_number_str"]: e["timestamp"] for e in events
                if e["log_id"] == log_id and lo <= e["timestamp"] < hi}

    report = reconcile(tmp_path, truth_counter(events), log_ids=LOGS, from_ms=START,
                       to_ms=START + 2 * HOUR, window_ms=HOUR, key_lister=api_keys)
    missing = [key for w in report.windows for key in (w.missing_keys or [])]
    assert missing == sorted((r["timestamp"], r["sequence_number_str"]) for r in lost)[:20]
    extra = [key for w in report.windows for key in (w.extra_keys or [])]
    assert extra == [(planted["timestamp"], "77")]
    assert any("77 at" in sentence for _, sentence in report.findings)
