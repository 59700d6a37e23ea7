"""The tap end to end over a requests-mock fake: records, STATE shape, exact resume."""

from __future__ import annotations

import io
import json

import pytest

from tap_rapid7.tap import TapRapid7
from tests.tap.fake_api import BASE, FakeLogSearch

BIG = 3237201778429120512
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def make_events() -> dict[str, list[tuple[int, int]]]:
    """Two logs; bursts in single milliseconds, one right on a window boundary (T0 + 10_000)."""
    a = [(T0 + i * 700, BIG - i * 8192) for i in range(40)]
    a += [(T0 + 10_000, BIG + k * 4096) for k in range(7)]  # burst at a window boundary
    a += [(T0 + 12_345, 1000 + k) for k in range(5)]  # burst inside a window
    b = [(T0 + i * 1100, 5 * 10**17 + i) for i in range(25)]
    return {"log-a": a, "log-b": b}


def config(**overrides) -> dict:
    cfg = {
        "api_key": "unit-key-do-not-leak",
        "base_url": BASE,
        "log_ids": ["log-a", "log-b"],
        "start_date": "2024-01-01T00:00:00Z",
        "end_date": "2024-01-01T00:00:30Z",
        "window_seconds": 10,
        "per_page": 4,
        "poll_interval_seconds": 0,
        "backoff_base_seconds": 0,
        "max_concurrent_queries": 1,
    }
    cfg.update(overrides)
    return cfg


def run_tap(monkeypatch, cfg: dict, state: dict | None = None) -> list[dict]:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    tap = TapRapid7(config=cfg, state=state, setup_mapper=True)
    tap.sync_all()
    out.flush()
    return [json.loads(line) for line in out.buffer.getvalue().decode().splitlines()]


def event_records(messages, stream="events"):
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


def partitions(state: dict) -> dict[str, dict]:
    return {p["context"]["log_id"]: p for p in state["bookmarks"]["events"]["partitions"]}


def emitted_keys(records):
    return [(r["log_id"], r["timestamp"], r["sequence_number"]) for r in records]


@pytest.fixture
def fake(requests_mock):
    api = FakeLogSearch(make_events())
    api.install(requests_mock)
    return api


def per_log(records) -> dict[str, list[tuple[int, int]]]:
    """Each log's (timestamp, sequence_number) in emitted order (logs read together interleave)."""
    logs: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        logs.setdefault(r["log_id"], []).append((r["timestamp"], r["sequence_number"]))
    return logs


@pytest.mark.parametrize("logs_per_query", [1, 2])
def test_one_sync_emits_exactly_the_window_and_a_final_cursor(monkeypatch, fake, logs_per_query):
    messages = run_tap(monkeypatch, config(logs_per_query=logs_per_query))
    records = event_records(messages)
    end = T0 + 30_000
    expected = [
        (log, ts, seq) for log in ("log-a", "log-b") for ts, seq in fake.truth(log, T0, end)
    ]
    if logs_per_query == 1:  # log after log
        assert emitted_keys(records) == expected
    assert per_log(records) == {log: fake.truth(log, T0, end) for log in ("log-a", "log-b")}
    assert all(r["sequence_number_str"] == str(r["sequence_number"]) for r in records)
    final = [m for m in messages if m["type"] == "STATE"][-1]["value"]
    for log in ("log-a", "log-b"):
        part = partitions(final)[log]
        assert part["next_from_millis"] == end
        assert part["next_from_sequence_number_str"] == ""
        assert all(isinstance(v, int | str) for k, v in part.items() if k != "context")
    # The management stream came through the same client.
    assert [r["id"] for r in event_records(messages, "logs")] == ["log-a", "log-b"]


@pytest.mark.parametrize("logs_per_query", [1, 2])
def test_every_state_matches_exactly_what_was_emitted_before_it(monkeypatch, fake, logs_per_query):
    # periodic STATE mid-window; with 2 logs per query their records interleave
    messages = run_tap(monkeypatch, config(state_every_records=3, logs_per_query=logs_per_query))
    seen: dict[str, list[tuple[int, int]]] = {"log-a": [], "log-b": []}
    checked = 0
    for message in messages:
        if message["type"] == "RECORD" and message["stream"] == "events":
            rec = message["record"]
            seen[rec["log_id"]].append((rec["timestamp"], rec["sequence_number"]))
        if message["type"] == "STATE" and "events" in message["value"].get("bookmarks", {}):
            for log, part in partitions(message["value"]).items():
                if "next_from_millis" not in part:
                    continue
                ms, seq = part["next_from_millis"], part["next_from_sequence_number_str"]
                upto = [
                    e
                    for e in fake.events[log]
                    if e[0] >= T0 and (e[0] < ms or (e[0] == ms and seq != "" and e[1] <= int(seq)))
                ]
                assert seen[log] == upto, (log, ms, seq)
                checked += 1
    assert checked > 10


@pytest.mark.parametrize("cut", [3, 17, 44, 50])
def test_resume_from_any_emitted_state_is_exact(monkeypatch, requests_mock, cut):
    """Interrupt after the STATE that follows record #cut; the rerun completes exactly."""
    api = FakeLogSearch(make_events())
    api.install(requests_mock)
    full = run_tap(monkeypatch, config(log_ids=["log-a"], state_every_records=1))
    records_seen = 0
    state = None
    first_part = []
    for message in full:
        if message["type"] == "RECORD" and message["stream"] == "events":
            records_seen += 1
            first_part.append(message["record"])
        if message["type"] == "STATE" and records_seen == cut:
            state = message["value"]
            break
    assert state is not None
    rest = event_records(run_tap(monkeypatch, config(log_ids=["log-a"]), state))
    assert emitted_keys(first_part + rest) == emitted_keys(event_records(full))


def test_to_inclusive_server_and_sync_split_on_a_burst(monkeypatch, requests_mock):
    api = FakeLogSearch(make_events(), to_inclusive=True)
    api.install(requests_mock)
    split = "2024-01-01T00:00:10Z"  # the millisecond that holds the 7-event burst
    first = run_tap(monkeypatch, config(log_ids=["log-a"], end_date=split))
    state = [m for m in first if m["type"] == "STATE"][-1]["value"]
    assert partitions(state)["log-a"]["next_from_millis"] == T0 + 10_000
    second = run_tap(monkeypatch, config(log_ids=["log-a"]), state)
    got = emitted_keys(event_records(first) + event_records(second))
    expected = [("log-a", ts, seq) for ts, seq in api.truth("log-a", T0, T0 + 30_000)]
    assert got == expected
    assert sum(1 for _, ts, _ in got if ts == T0 + 10_000) == 7


def test_empty_log_ids_reads_every_log_from_management(monkeypatch, fake):
    records = event_records(run_tap(monkeypatch, config(log_ids=[])))
    assert {r["log_id"] for r in records} == {"log-a", "log-b"}


def test_stored_cursor_wins_over_a_later_start_date(monkeypatch, fake):
    """A relative start_date ("1 day ago") moves forward each run; it must never skip a gap."""
    first = run_tap(monkeypatch, config(log_ids=["log-a"], end_date="2024-01-01T00:00:05Z"))
    state = [m for m in first if m["type"] == "STATE"][-1]["value"]
    cursor = partitions(state)["log-a"]["next_from_millis"]
    assert cursor == T0 + 5_000
    later_start = config(log_ids=["log-a"], start_date="2024-01-01T00:00:20Z")
    rest = event_records(run_tap(monkeypatch, later_start, state))
    assert min(r["timestamp"] for r in rest) < T0 + 20_000  # the gap after the cursor is read
    got = emitted_keys(event_records(first) + rest)
    expected = [("log-a", ts, seq) for ts, seq in fake.truth("log-a", T0, T0 + 30_000)]
    assert got == expected


def test_start_date_is_required_without_state(monkeypatch, fake):
    cfg = config()
    del cfg["start_date"]
    with pytest.raises(Exception, match="start_date"):
        run_tap(monkeypatch, cfg)


def test_deselected_properties_and_stream_maps_still_apply(monkeypatch, fake):
    catalog = TapRapid7(config=config(), parse_env_config=False).catalog_dict
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == ["properties", "labels"]:
                meta["metadata"]["selected"] = False
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr("sys.stdout", out)
    tap = TapRapid7(config=config(stream_maps={"events": {"message": None}}), catalog=catalog)
    tap.sync_all()
    out.flush()
    messages = [json.loads(line) for line in out.buffer.getvalue().decode().splitlines()]
    records = event_records(messages)
    assert records
    assert all("labels" not in r and "message" not in r for r in records)
    assert all("sequence_number_str" in r for r in records)


def test_state_written_when_the_bookmark_was_event_time_still_resumes_exactly(
    monkeypatch, requests_mock
):
    """Before `received_at` existed the replication key was `event_time` (then = receipt time)."""
    api = FakeLogSearch(make_events())
    api.install(requests_mock)
    full = run_tap(monkeypatch, config(log_ids=["log-a"], state_every_records=1))
    records, state = [], None
    for message in full:
        if message["type"] == "RECORD" and message["stream"] == "events":
            records.append(message["record"])
        # a STATE inside the 7-event burst at T0 + 10_000 (cursor with a sequence number)
        if message["type"] == "STATE" and records and records[-1]["timestamp"] == T0 + 10_000:
            state = json.loads(json.dumps(message["value"]))
            break
    assert state is not None
    old = partitions(state)["log-a"]
    assert old["next_from_sequence_number_str"], "the cut is inside the burst"
    old["replication_key"] = "event_time"  # exactly what the previous version stored
    rest_messages = run_tap(monkeypatch, config(log_ids=["log-a"]), state)
    rest = event_records(rest_messages)
    assert emitted_keys(records + rest) == emitted_keys(event_records(full))
    final = [m for m in rest_messages if m["type"] == "STATE"][-1]["value"]
    assert partitions(final)["log-a"]["replication_key"] == "received_at"


@pytest.mark.parametrize("per_page", [4, 100], ids=["group-page-full", "group-fits-a-page"])
@pytest.mark.parametrize("cut", [5, 23, 41, 60])
def test_logs_read_together_resume_exactly_from_any_state(
    monkeypatch, requests_mock, per_page, cut
):
    api = FakeLogSearch(make_events())
    api.install(requests_mock)
    cfg = config(logs_per_query=2, per_page=per_page, state_every_records=1)
    full = run_tap(monkeypatch, cfg)
    records, state = [], None
    for message in full:
        if message["type"] == "RECORD" and message["stream"] == "events":
            records.append(message["record"])
        if message["type"] == "STATE" and len(records) == cut:
            state = message["value"]
            break
    assert state is not None
    rest = event_records(run_tap(monkeypatch, config(logs_per_query=2, per_page=per_page), state))
    end = T0 + 30_000
    assert per_log(records + rest) == {log: api.truth(log, T0, end) for log in ("log-a", "log-b")}


def test_quiet_logs_read_together_cost_one_query_per_window(monkeypatch, requests_mock):
    api = FakeLogSearch(make_events(), polls=0)
    api.install(requests_mock)
    records = event_records(run_tap(monkeypatch, config(logs_per_query=2, per_page=100)))
    assert len(records) == 77
    assert [start[0] for start in api.starts] == ["log-a:log-b"] * 3  # 3 windows, not 6 queries


def test_messages_taken_by_stdout_in_pieces_come_out_whole(monkeypatch, fake):
    """Unbuffered stdout (PYTHONUNBUFFERED=1) may take a line in pieces; none is dropped."""
    from tests.plugin_io.test_singer_lines import Trickle

    raw = Trickle(step=1000)
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(raw, encoding="utf-8"))
    TapRapid7(config=config(per_page=40), state=None, setup_mapper=True).sync_all()
    messages = [json.loads(line) for line in bytes(raw.data).splitlines()]
    assert raw.calls > len(messages)  # lines longer than a piece really were split
    assert sorted(emitted_keys(event_records(messages))) == sorted(
        (log, ts, seq) for log, keys in make_events().items() for ts, seq in keys
    )
    assert messages[-1]["type"] == "STATE"
