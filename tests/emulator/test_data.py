"""Synthetic data: determinism, sequence numbers, bursts, messages, labels, logs and log sets."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest
import requests

from tap_rapid7.emulator import EmulatorOptions
from tap_rapid7.emulator.app import EmulatorApp
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
    straddling = sum(1 for a, b in itertools.pairwise(pages)
                     if a[-1]["timestamp"] == b[0]["timestamp"])
    assert straddling >= 1


def test_sequence_numbers_exact_above_2_53_stepping_and_not_monotonic(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, burst_probability=1.0)
    result = pull(emu.base_url, emu.api_key, f"/query/logs/{emu.log_ids[0]}",
                  {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 5 * MINUTE_MS,
                   "per_page": 500})
    events = result.events
    assert len(events) > 500
    by_ms: dict[int, list[int]] = defaultdict(list)
    for event in events:
        seq = event["sequence_number"]
        assert isinstance(seq, int)
        assert seq == int(event["sequence_number_str"]) > 2**53
        assert int(float(seq)) != seq, "a value a float can hold would hide precision bugs"
        by_ms[event["timestamp"]].append(seq)
    assert len({e["sequence_number"] for e in events}) == len(events), "unique per log"
    steps = {b - a for seqs in by_ms.values() for a, b in itertools.pairwise(seqs)}
    assert steps == {4096}
    firsts = [by_ms[ts][0] for ts in sorted(by_ms)]
    lasts = [by_ms[ts][-1] for ts in sorted(by_ms)]
    drops = sum(1 for last, first in zip(lasts, firsts[1:], strict=False) if first < last)
    assert 0 < drops < len(firsts) - 1, "neither monotonic nor monotonically decreasing"


def test_sequence_numbers_are_exact_in_the_raw_json(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    text = requests.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}",
                        params={"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + MINUTE_MS},
                        headers={"X-Api-Key": emu.api_key}, timeout=10).text
    event = json.loads(text)["events"][0]
    seq = event["sequence_number_str"]
    assert f'"sequence_number":{seq},' in text
    assert f'"sequence_number_str":"{seq}"' in text


def test_messages_cover_every_kind_and_labels_exist():
    app = _app(seed=7)
    window = (NOW_MS - 2 * HOUR_MS, NOW_MS - HOUR_MS)
    kinds: Counter = Counter()
    labelled = 0
    for log in app.data.logs:
        for event in app.data.iter_log(log.index, *window):
            message = event.message
            labelled += event.labelled
            if len(message) > 10_000:
                kinds["long"] += 1
            if "\n" in message:
                kinds["multiline"] += 1
            if any(ord(ch) > 127 for ch in message):
                kinds["unicode"] += 1
            try:
                parsed = json.loads(message)
            except ValueError:
                kinds["invalid_json" if message.startswith("{") else "plain"] += 1
                continue
            kinds["json"] += 1
            embedded = parsed["timestamp"]
            assert embedded < _iso(event.ts), "embedded event time is before `timestamp`"
    for kind in ("json", "plain", "multiline", "unicode", "long", "invalid_json"):
        assert kinds[kind] > 0, kind
    assert labelled > 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_labels_are_served_and_resolvable(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    events = [e for log_id in emu.log_ids
              for e in emu.events(log_id, NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 10 * MINUTE_MS)]
    label_sets = {json.dumps(e["labels"]) for e in events}
    assert label_sets == {"[]", '[{"id": "00000000-0000-0000-0000-000000000006"}]'}
    response = requests.get(
        f"{emu.base_url}/management/labels/00000000-0000-0000-0000-000000000006",
        headers={"X-Api-Key": emu.api_key}, timeout=10)
    assert response.status_code == 200
    assert response.json()["label"]["name"] == "Out of order entry"


def test_data_covers_any_time_range_but_nothing_after_now():
    app = _app(events_per_second=5)
    assert len(app.truth(0, 5 * MINUTE_MS)) > 0, "data exists at the epoch"
    later = NOW_MS + 5 * MINUTE_MS
    keys = app.truth(NOW_MS - MINUTE_MS, later)
    assert keys
    stamps = [e["timestamp"] for log in app.data.logs
              for e in app.events(log.id, NOW_MS - MINUTE_MS, later, "http://x")]
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
    return [app.data.bucket(log.index, b)[0] for log in app.data.logs
            for b in range(window[0] // MINUTE_MS, window[1] // MINUTE_MS)]


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
    logs = requests.get(f"{emu.base_url}/management/logs",
                        headers={"X-Api-Key": emu.api_key}, timeout=10).json()["logs"]
    assert [log["id"] for log in logs] == emu.log_ids
    assert emu.options.seed == 2
    assert emu.now_ms() == NOW_MS
