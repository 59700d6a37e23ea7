"""Next links in Rapid7's own form: each one a new query; paging returns every entry once."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull

MINUTE_MS = 60_000
DAY_MS = 86_400_000
PER_PAGE = 29

# How a query gets ready: (options, whether a Next answers 200 at once)
MODES = {
    "async": {"polls_before_ready": 1, "next_is_async": True},
    "immediate": {"polls_before_ready": 0, "next_is_async": True},
    "sync_next": {"polls_before_ready": 2, "next_is_async": False},
}


def _rels(body: dict) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in body.get("links", [])}


def _crowded_edges(emu, log_id: str) -> tuple[int, int]:
    """Two milliseconds about two minutes apart, each holding several entries of `log_id`."""
    start = NOW_MS - HOUR_MS
    events = emu.events(log_id, start, start + 3 * MINUTE_MS)
    crowded = sorted(ts for ts, n in Counter(e["timestamp"] for e in events).items() if n >= 3)
    first = crowded[0]
    last = max(ts for ts in crowded if ts - first <= 2 * MINUTE_MS)
    assert last - first > MINUTE_MS
    return first, last


def _expected(
    emu,
    from_ms: int,
    to_ms: int,
    log_ids: set[str],
    *,
    from_inclusive: bool,
    to_inclusive: bool,
    most_recent_first: bool,
) -> list[tuple[str, int, str]]:
    """The query's own window from the (always half-open) ground truth, in serving order."""
    lo = from_ms if from_inclusive else from_ms + 1
    hi = to_ms + 1 if to_inclusive else to_ms
    keys = [k for k in emu.truth(lo, hi) if k[0] in log_ids]
    return sorted(keys, key=lambda k: (k[1], int(k[2])), reverse=most_recent_first)


@pytest.mark.parametrize(
    ("from_inclusive", "to_inclusive", "sequence_numbers", "most_recent_first"),
    list(itertools.product([True, False], [True, False], ["unique", "per_ms"], [False, True])),
)
def test_paging_returns_every_entry_exactly_once(
    emulator_factory, from_inclusive, to_inclusive, sequence_numbers, most_recent_first
):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        seed=21,
        events_per_second=2.0,
        burst_probability=1.0,
        burst_size=60,
        from_inclusive=from_inclusive,
        to_inclusive=to_inclusive,
        sequence_numbers=sequence_numbers,
        lowercase_rels=most_recent_first,
        non_page_rate=0.15,
        error_rate=0.05,
        drop_rate=0.02,
        fault_seed=4,
    )
    log_id = emu.log_ids[0]
    logset = next(ls for ls in emu.logsets if log_id in ls["log_ids"])
    from_ms, to_ms = _crowded_edges(emu, log_id)
    params = {"from": from_ms, "to": to_ms, "per_page": PER_PAGE}
    if most_recent_first:
        params["most_recent_first"] = "true"
    targets = [
        (f"/query/logs/{log_id}", {log_id}),
        (f"/query/logsets/{logset['id']}", set(logset["log_ids"])),
    ]
    cases = [(mode, None) for mode in MODES] + [("async", "retention")]
    for mode, variant in cases:
        emu.update_options(**MODES[mode], retention_days=396)
        if variant == "retention":  # the retention horizon falls inside the window
            emu.update_options(retention_days=(NOW_MS - (from_ms + to_ms) // 2) / DAY_MS)
        for path, log_ids in targets:
            expected = _expected(
                emu,
                from_ms,
                to_ms,
                log_ids,
                from_inclusive=from_inclusive,
                to_inclusive=to_inclusive,
                most_recent_first=most_recent_first,
            )
            assert len(expected) > 3 * PER_PAGE
            before = emu.stats()["requests"].get("queries_started", 0)
            result = pull(emu.base_url, emu.api_key, path, params, max_polls=10_000)
            label = f"{mode} {variant} {path}"
            assert result.keys == expected, label
            assert result.pages == math.ceil(len(expected) / PER_PAGE), label
            started = emu.stats()["requests"]["queries_started"] - before
            assert started == result.starts >= result.pages, label
            if mode == "async":  # a non-page body on a Self link: that link again
                assert started == result.pages, label
            if mode == "immediate":  # a non-page body on a start: a new query
                assert started == result.pages + result.non_pages, label
            if variant == "retention":
                # the first query starts beyond retention; ascending Next links start at the
                # last entry (retained), reversed ones keep the original `from`
                assert result.beyond_retention[0], label
                assert (
                    all(result.beyond_retention[1:])
                    if most_recent_first
                    else not any(result.beyond_retention[1:])
                ), label
            else:
                assert not any(result.beyond_retention), label
    faults = emu.stats()["faults"]
    assert faults["non_page_bodies"] > 0
    assert faults["server_errors"] > 0


@pytest.mark.parametrize("most_recent_first", [False, True])
def test_next_link_is_rapid7s_new_query_form(emulator_factory, session_for, most_recent_first):
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=1, burst_probability=1.0, sequence_numbers="per_ms"
    )
    session = session_for(emu)
    keys = f"{emu.log_ids[0]}:{emu.log_ids[2]}"
    statement = "where(/ /)"  # a space and slashes: must be URL-encoded
    sent = {
        "from": NOW_MS - HOUR_MS,
        "to": NOW_MS - HOUR_MS + 5 * MINUTE_MS,
        "per_page": 40,
        "query": statement,
    }
    if most_recent_first:
        sent["most_recent_first"] = "true"
    running = session.get(f"{emu.base_url}/log_search/query/logs/{keys}", params=sent).json()
    page = session.get(_rels(running)["Self"]).json()
    last = page["events"][-1]
    href = _rels(page)["Next"]
    parts = urlsplit(href)
    assert f"{parts.scheme}://{parts.netloc}" == emu.base_url
    assert parts.path == f"/log_search/query/logs/{keys}"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    window = (
        {"from": str(sent["from"]), "to": str(last["timestamp"])}
        if most_recent_first
        else {"from": str(last["timestamp"]), "to": str(sent["to"])}
    )
    assert query == {
        **window,
        "per_page": "40",
        "sequence_number": last["sequence_number_str"],
        "next_page": "true",
        "query": statement,
        **({"most_recent_first": "true"} if most_recent_first else {}),
    }
    assert parts.query.startswith(
        f"from={window['from']}&to={window['to']}&per_page=40"
        f"&sequence_number={last['sequence_number_str']}&next_page=true"
    )
    assert "%2F" in parts.query, "the statement is URL-encoded"
    assert " " not in parts.query
    before = emu.stats()["requests"]["queries_started"]
    following = session.get(href)
    assert following.status_code == 202, "a Next link starts a new query that needs polling"
    assert emu.stats()["requests"]["queries_started"] == before + 1
    assert emu.stats()["requests"]["next_queries_started"] == 1
    second = session.get(_rels(following.json())["Self"]).json()
    assert second["leql"]["during"] == {"from": int(window["from"]), "to": int(window["to"])}
    assert second["leql"]["statement"] == statement
    first_keys = {(e["log_id"], e["timestamp"], e["sequence_number_str"]) for e in page["events"]}
    second_keys = [
        (e["log_id"], e["timestamp"], e["sequence_number_str"]) for e in second["events"]
    ]
    assert len(second_keys) == 40
    assert first_keys.isdisjoint(second_keys)


def test_next_continues_inside_a_split_burst_with_recurring_sequence_numbers(
    emulator_factory, session_for
):
    """A burst split across pages: the Next link (`from` = its millisecond, `sequence_number` =
    the last one served) continues exactly there, although the same sequence numbers recur in
    later milliseconds."""
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=0, burst_probability=1.0, sequence_numbers="per_ms"
    )
    session = session_for(emu)
    log_id = emu.log_ids[0]
    url = f"{emu.base_url}/query/logs/{log_id}"
    window = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 2 * MINUTE_MS}
    events = emu.events(log_id, window["from"], window["to"])
    burst_ts = Counter(e["timestamp"] for e in events).most_common(1)[0][0]
    burst = [e for e in events if e["timestamp"] == burst_ts]
    assert len(burst) > 20
    page = session.get(url, params={**window, "from": burst_ts, "per_page": 10}).json()
    assert [e["sequence_number_str"] for e in page["events"]] == [
        e["sequence_number_str"] for e in burst[:10]
    ]
    nxt = session.get(_rels(page)["Next"]).json()
    assert [e["sequence_number_str"] for e in nxt["events"]] == [
        e["sequence_number_str"] for e in burst[10:20]
    ]
    # the same sequence numbers recur in other milliseconds: comparing them alone is wrong
    later = [e for e in events if e["timestamp"] > burst_ts]
    assert any(int(e["sequence_number"]) <= int(burst[9]["sequence_number"]) for e in later)
