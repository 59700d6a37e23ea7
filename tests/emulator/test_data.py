"""Synthetic data: determinism, sequence numbers, bursts, messages, labels, logs and log sets."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from datetime import datetime

import pytest
import requests

from logsearch_emulator import EmulatorOptions
from logsearch_emulator.app import EmulatorApp
from logsearch_emulator.data import MESSAGE_KINDS, REVIEWED_LABEL_ID, SUSPICIOUS_LABEL_ID
from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull

MINUTE_MS = 60_000


def _app(**overrides) -> EmulatorApp:
    return EmulatorApp(EmulatorOptions(fixed_now_ms=NOW_MS, **overrides))


def test_same_seed_same_data_other_seed_other_data():
    window = (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 5 * MINUTE_MS)
    a, b, c = _app(seed=5), _app(seed=5), _app(seed=6)
    assert [log.id for log in a.data.logs] == [log.id for log in b.data.logs]
    assert a.truth(*window) == b.truth(*window)
    log_id = a.data.logs[0].id
    assert a.events(log_id, *window, "http://x") == b.events(log_id, *window, "http://x")
    assert {log.id for log in a.data.logs}.isdisjoint({log.id for log in c.data.logs})
    assert a.truth(*window) != c.truth(*window)


def test_log_count_and_logset_count_shape_the_management_view():
    app = _app(log_count=6, logset_count=3)
    assert len(app.data.logs) == 6
    assert len(app.data.logsets) == 3
    members = [i for ls in app.data.logsets for i in ls.log_indexes]
    assert sorted(members) == list(range(6)), "every log is in exactly one log set"
    assert all(len(ls.log_indexes) == 2 for ls in app.data.logsets)


def test_events_per_second_sets_the_rate():
    window = (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 10 * MINUTE_MS)
    slow = len(_app(events_per_second=1, burst_probability=0).truth(*window))
    fast = len(_app(events_per_second=10, burst_probability=0).truth(*window))
    seconds = 600 * 4  # four logs
    assert 0.7 * seconds < slow < 1.3 * seconds
    assert 0.85 * 10 * seconds < fast < 1.15 * 10 * seconds
    assert len(_app(events_per_second=0, burst_probability=0).truth(*window)) == 0


def _per_millisecond(app: EmulatorApp, window: tuple[int, int]) -> Counter:
    counts: Counter = Counter()
    for log in app.data.logs:
        for event in app.data.iter_log(log.index, *window):
            counts[(log.id, event.ts)] += 1
    return counts


def test_bursts_put_many_events_in_one_millisecond():
    window = (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 10 * MINUTE_MS)
    bursty = _per_millisecond(_app(burst_probability=1.0, burst_size=300), window)
    bursts = [n for n in bursty.values() if n >= 150]
    assert len(bursts) == 4 * 10, "one burst per log and minute"
    assert max(bursts) <= 300 + 12
    calm = _per_millisecond(_app(burst_probability=0.0), window)
    assert max(calm.values()) < 20
    small = _per_millisecond(_app(burst_probability=1.0, burst_size=20), window)
    assert max(small.values()) < 40


def test_a_burst_straddles_page_boundaries(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, burst_probability=0.3)
    window = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 20 * MINUTE_MS, "per_page": 100}
    pages: list[list[dict]] = []
    session = requests.Session()
    session.headers["X-Api-Key"] = emu.api_key
    body = session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=window).json()
    while True:
        pages.append(body["events"])
        nxt = [link["href"] for link in body.get("links", []) if link["rel"] == "Next"]
        if not nxt:
            break
        body = session.get(nxt[0]).json()
    straddling = sum(
        1 for a, b in itertools.pairwise(pages) if a[-1]["timestamp"] == b[0]["timestamp"]
    )
    assert straddling >= 1


@pytest.mark.parametrize("shape", ["odd", "rapid7"])
def test_sequence_numbers_exact_above_2_53_stepping_and_not_monotonic(emulator_factory, shape):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=0, burst_probability=1.0, sequence_shape=shape
    )
    result = pull(
        emu.base_url,
        emu.api_key,
        f"/query/logs/{emu.log_ids[0]}",
        {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 5 * MINUTE_MS, "per_page": 500},
    )
    events = result.events
    assert len(events) > 500
    by_ms: dict[int, list[int]] = defaultdict(list)
    for event in events:
        seq = event["sequence_number"]
        assert isinstance(seq, int)
        assert seq == int(event["sequence_number_str"]) > 2**53
        if shape == "odd":
            assert int(float(seq)) != seq, "a value a float can hold would hide precision bugs"
        else:
            assert seq % 4096 == 0
            assert int(float(seq)) == seq, "Rapid7's values are doubles"
            assert str(float(seq)) != str(seq), "...that a float still prints wrongly"
        by_ms[event["timestamp"]].append(seq)
    assert len({e["sequence_number"] for e in events}) == len(events), "unique per log"
    steps = {b - a for seqs in by_ms.values() for a, b in itertools.pairwise(seqs)}
    assert steps == {4096}
    firsts = [by_ms[ts][0] for ts in sorted(by_ms)]
    lasts = [by_ms[ts][-1] for ts in sorted(by_ms)]
    drops = sum(1 for last, first in zip(lasts, firsts[1:], strict=False) if first < last)
    assert 0 < drops < len(firsts) - 1, "neither monotonic nor monotonically decreasing"


@pytest.mark.parametrize("shape", ["odd", "rapid7"])
def test_per_ms_sequence_numbers_recur_across_milliseconds(emulator_factory, shape):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=0,
        burst_probability=1.0,
        sequence_numbers="per_ms",
        sequence_shape=shape,
    )
    window = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 3 * MINUTE_MS, "per_page": 500}
    result = pull(emu.base_url, emu.api_key, "/query/logsets/" + emu.logsets[0]["id"], window)
    events = result.events
    assert len(events) > 1000
    by_log_ms: dict[tuple[str, int], list[int]] = defaultdict(list)
    for event in events:
        seq = event["sequence_number"]
        assert seq == int(event["sequence_number_str"]) > 2**53
        assert (int(float(seq)) != seq) == (shape == "odd")
        by_log_ms[(event["log_id"], event["timestamp"])].append(seq)
    for seqs in by_log_ms.values():
        assert all(b - a == 4096 for a, b in itertools.pairwise(seqs))
    per_log_first = defaultdict(set)
    for (log_id, _), seqs in by_log_ms.items():
        per_log_first[log_id].add(seqs[0])
    assert all(len(firsts) == 1 for firsts in per_log_first.values()), (
        "every millisecond of a log starts at the same number"
    )
    seqs = [e["sequence_number"] for e in events]
    assert len(set(seqs)) < len(seqs), "numbers recur across milliseconds"
    keys = [(e["log_id"], e["timestamp"], e["sequence_number"]) for e in events]
    assert len(set(keys)) == len(keys), "the full identity is unique"
    in_ms = defaultdict(list)
    for event in events:
        in_ms[event["timestamp"]].append(event["sequence_number"])
    assert all(len(set(v)) == len(v) for v in in_ms.values()), (
        "two logs never share a number inside one millisecond"
    )
    assert len({e["log_id"] for e in events}) == 2
    order = [(e["timestamp"], e["sequence_number"]) for e in events]
    assert order == sorted(order)
    unique = _app(burst_probability=1.0, sequence_shape=shape)
    per_ms = _app(burst_probability=1.0, sequence_numbers="per_ms", sequence_shape=shape)
    span = (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + MINUTE_MS)
    assert [(k[0], k[1]) for k in unique.truth(*span)] == [
        (k[0], k[1]) for k in per_ms.truth(*span)
    ]
    assert unique.truth(*span) != per_ms.truth(*span)


def test_every_log_has_its_own_sequence_offset():
    app = EmulatorApp(EmulatorOptions(log_count=2048, logset_count=3))
    offsets = [log.seq_offset for log in app.data.logs]
    assert len(set(offsets)) == 2048
    assert all(o % 2 == 1 and 0 < o < 4096 for o in offsets)
    with pytest.raises(ValueError, match="log_count"):
        EmulatorOptions(log_count=2049).validate()
    with pytest.raises(ValueError, match="sequence_numbers"):
        EmulatorOptions(sequence_numbers="random").validate()
    with pytest.raises(ValueError, match="sequence_shape"):
        EmulatorOptions(sequence_shape="even").validate()


def test_sequence_numbers_are_exact_in_the_raw_json(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    text = requests.get(
        f"{emu.base_url}/query/logs/{emu.log_ids[0]}",
        params={"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + MINUTE_MS},
        headers={"X-Api-Key": emu.api_key},
        timeout=10,
    ).text
    event = json.loads(text)["events"][0]
    seq = event["sequence_number_str"]
    assert f'"sequence_number":{seq},' in text
    assert f'"sequence_number_str":"{seq}"' in text


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(?:Z|[+-]\d\d:\d\d)")


def _own_time_ms(message: str) -> int | None:
    """An extractor written for this test: the time the message itself carries."""
    try:
        parsed = json.loads(message)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        if "time" in parsed:
            return parsed["time"]
        text = parsed.get("timestamp") or parsed.get("timeGenerated")
        if text is None:
            return None
        return round(datetime.fromisoformat(text).timestamp() * 1000)
    match = _ISO.search(message)
    if match is None:
        return None
    return round(datetime.fromisoformat(match.group(0)).timestamp() * 1000)


def test_messages_cover_every_kind_and_labels_exist():
    app = _app(seed=7)
    window = (NOW_MS - 2 * HOUR_MS, NOW_MS - HOUR_MS)
    kinds: Counter = Counter()
    shapes: Counter = Counter()
    labelled = 0
    for log in app.data.logs:
        for event in app.data.iter_log(log.index, *window):
            message = event.message
            labelled += event.labelled
            shapes[event.kind] += 1
            if len(message) > 10_000:
                kinds["long"] += 1
            if "\n" in message:
                kinds["multiline"] += 1
            if any(ord(ch) > 127 for ch in message):
                kinds["unicode"] += 1
            if '"timeGenerated":"' in message:
                kinds["offset" if '+00:00"' in message else "zulu"] += 1
            try:
                json.loads(message)
            except ValueError:
                kinds["invalid_json" if message.startswith("{") else "plain"] += 1
                continue
            kinds["json"] += 1
    for kind in ("json", "plain", "multiline", "unicode", "long", "invalid_json", "offset", "zulu"):
        assert kinds[kind] > 0, kind
    assert set(shapes) == set(MESSAGE_KINDS), "every message shape occurs"
    assert labelled > 0


def test_message_time_lags_receipt_time_and_event_ms_is_what_the_message_says():
    app = _app(seed=3)
    events = [
        e
        for log in app.data.logs
        for e in app.data.iter_log(log.index, NOW_MS - 2 * HOUR_MS, NOW_MS - HOUR_MS)
    ]
    assert len(events) > 40_000
    lags: Counter = Counter()
    for event in events:
        assert _own_time_ms(event.message) == event.event_ms, event.message[:200]
        if event.event_ms is None:
            lags["none"] += 1
            assert event.kind in ("no_time_json", "no_time_text")
            continue
        lag = event.ts - event.event_ms
        if 1_000 <= lag < 25_000:
            lags["seconds"] += 1
        elif 60_000 <= lag < 1_800_000:
            lags["late_forwarder"] += 1
        else:
            raise AssertionError(f"unexpected lag {lag} ms")
    share = {k: v / len(events) for k, v in lags.items()}
    assert 0.002 < share["none"] < 0.01
    assert 0.035 < share["late_forwarder"] < 0.065
    assert share["seconds"] > 0.92
    assert max(event.ts - event.event_ms for event in events if event.event_ms) > 20 * 60_000


def test_event_times_are_keyed_like_truth(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS)
    window = (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 5 * MINUTE_MS)
    times = emu.event_times(*window)
    assert list(times) == emu.truth(*window)
    served = {
        (e["log_id"], e["timestamp"], e["sequence_number_str"]): _own_time_ms(e["message"])
        for log_id in emu.log_ids
        for e in emu.events(log_id, *window)
    }
    assert served == times
    assert None in times.values()


def test_labels_are_served_and_resolvable(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    events = [
        e
        for log_id in emu.log_ids
        for e in emu.events(log_id, NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 10 * MINUTE_MS)
    ]
    label_sets = {json.dumps(e["labels"]) for e in events}
    carried = [
        "00000000-0000-0000-0000-000000000006",  # reserved: "Out of order entry"
        SUSPICIOUS_LABEL_ID,  # user labels
        REVIEWED_LABEL_ID,
    ]
    assert label_sets == {
        "[]",
        *(
            json.dumps(
                [
                    {
                        "id": i,
                        "links": [{"rel": "Self", "href": f"{emu.base_url}/management/labels/{i}"}],
                    }
                ]
            )
            for i in carried
        ),
    }
    shares = Counter(e["labels"][0]["id"] if e["labels"] else "" for e in events)
    assert shares[carried[0]] > shares[carried[1]] > shares[carried[2]] > 0
    names = []
    for label_id in carried:
        response = requests.get(
            f"{emu.base_url}/management/labels/{label_id}",
            headers={"X-Api-Key": emu.api_key},
            timeout=10,
        )
        assert response.status_code == 200
        names.append(response.json()["label"]["name"])
    assert names == ["Out of order entry", "Suspicious login", "Reviewed"]


def test_data_covers_any_time_range_but_nothing_after_now():
    app = _app(events_per_second=5, retention_days=None)
    assert len(app.truth(0, 5 * MINUTE_MS)) > 0, "data exists at the epoch"
    later = NOW_MS + 5 * MINUTE_MS
    keys = app.truth(NOW_MS - MINUTE_MS, later)
    assert keys
    stamps = [
        e["timestamp"]
        for log in app.data.logs
        for e in app.events(log.id, NOW_MS - MINUTE_MS, later, "http://x")
    ]
    assert max(stamps) <= NOW_MS
    app.update_options(fixed_now_ms=later)
    assert len(app.truth(NOW_MS - MINUTE_MS, later)) > len(keys)


def test_invalid_options_are_rejected_by_name():
    with pytest.raises(ValueError, match="burst_size"):
        EmulatorApp(EmulatorOptions(burst_size=10_000))
    app = _app()
    with pytest.raises(ValueError, match="no_such_knob"):
        app.update_options(no_such_knob=1)
    with pytest.raises(ValueError, match="per_page_over_max"):
        app.update_options(per_page_over_max="explode")


def test_bucket_cache_is_bounded_and_regeneration_is_identical():
    window = (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 10 * MINUTE_MS)
    cached = _app(cache_max_events=100_000)
    first = cached.truth(*window)
    generated = cached.stats()["buckets_generated"]
    assert cached.truth(*window) == first
    assert cached.stats()["buckets_generated"] == generated, "served from the cache"
    tiny = _app(cache_max_events=0)
    assert tiny.truth(*window) == first
    assert tiny.truth(*window) == first
    assert tiny.stats()["buckets_generated"] == 2 * generated, "nothing stays cached"
    assert tiny.stats()["cached_events"] <= max(len(b) + 1 for b in _bucket_sizes(tiny, window))
    sparse = _app(events_per_second=0, burst_probability=0, cache_max_events=50)
    assert sparse.truth(0, 10 * HOUR_MS) == []
    assert sparse.stats()["cached_events"] <= 50, "empty buckets count against the bound"


def _bucket_sizes(app: EmulatorApp, window: tuple[int, int]) -> list[list]:
    return [
        app.data.bucket(log.index, b)[0]
        for log in app.data.logs
        for b in range(window[0] // MINUTE_MS, window[1] // MINUTE_MS)
    ]


def test_low_rates_use_exact_poisson_counts():
    window = (NOW_MS - HOUR_MS, NOW_MS)
    count = len(_app(events_per_second=0.1, burst_probability=0).truth(*window))
    assert 0.8 * 1440 < count < 1.2 * 1440


def test_update_options_rebuilds_data_live(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, seed=1)
    before = list(emu.log_ids)
    emu.update_options(seed=2, log_count=3)
    assert len(emu.log_ids) == 3
    assert set(emu.log_ids).isdisjoint(before)
    logs = requests.get(
        f"{emu.base_url}/management/logs", headers={"X-Api-Key": emu.api_key}, timeout=10
    ).json()["logs"]
    assert [log["id"] for log in logs] == emu.log_ids
    assert emu.options.seed == 2
    assert emu.now_ms() == NOW_MS
