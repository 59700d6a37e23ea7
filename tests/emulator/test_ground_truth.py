"""A plain requests client reproduces the ground truth exactly, with and without faults."""

from __future__ import annotations

from collections import Counter

import requests

from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull


def _pull_all_logs(emu, from_ms: int, to_ms: int, per_page: int) -> list[tuple[str, int, str]]:
    keys: list[tuple[str, int, str]] = []
    for log_id in emu.log_ids:
        result = pull(
            emu.base_url,
            emu.api_key,
            f"/query/logs/{log_id}",
            {"from": from_ms, "to": to_ms, "per_page": per_page},
        )
        keys.extend(result.keys)
    return keys


def test_plain_client_gets_exact_truth_with_faults_on(emulator_factory):
    emu = emulator_factory(
        seed=11,
        fixed_now_ms=NOW_MS,
        burst_probability=0.5,
        burst_size=200,
        polls_before_ready=2,
        next_is_async=True,
        lowercase_rels=True,
        error_rate=0.15,
        drop_rate=0.1,
        fault_seed=3,
        force_429_on_request=(2, 5, 17),
    )
    from_ms, to_ms = NOW_MS - 2 * HOUR_MS, NOW_MS - 2 * HOUR_MS + 20 * 60_000
    keys = _pull_all_logs(emu, from_ms, to_ms, per_page=137)

    truth = emu.truth(from_ms, to_ms)
    assert len(truth) > 1000
    assert Counter(keys) == Counter(truth), "a key is missing or served twice"
    stats = emu.stats()
    faults = stats["faults"]
    assert faults["dropped"] > 0
    assert faults["server_errors"] > 0
    assert faults["forced_429"] == 3
    assert stats["requests"]["polls"] > 0


def test_http_truth_endpoint_matches_python_truth(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS)
    from_ms, to_ms = NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 5 * 60_000
    log_id = emu.log_ids[1]
    body = requests.get(
        f"{emu.base_url}/_emulator/truth",
        params={"from": from_ms, "to": to_ms, "log_id": log_id},
        timeout=10,
    ).json()
    truth = emu.truth(from_ms, to_ms, log_id)
    assert body["count"] == len(truth) > 0
    assert [tuple(k) for k in body["keys"]] == truth
    key = body["keys"][0]
    assert isinstance(key[1], int)
    assert isinstance(key[2], str)
    assert key[0] == log_id
    assert from_ms <= key[1] < to_ms
    assert int(key[2]) > 2**53
    everything = requests.get(
        f"{emu.base_url}/_emulator/truth", params={"from": from_ms, "to": to_ms}, timeout=10
    ).json()
    assert everything["count"] == len(emu.truth(from_ms, to_ms)) > body["count"]


def test_truth_is_sorted_by_log_timestamp_sequence(emulator_factory):
    emu = emulator_factory(fixed_now_ms=NOW_MS, burst_probability=1.0)
    from_ms, to_ms = NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + 3 * 60_000
    truth = emu.truth(from_ms, to_ms)
    order = []
    for log_id in sorted(emu.log_ids):
        events = emu.events(log_id, from_ms, to_ms)
        order.extend((log_id, e["timestamp"], e["sequence_number"]) for e in events)
    assert order == sorted(order)
    assert truth == [(log_id, ts, str(seq)) for log_id, ts, seq in order]
