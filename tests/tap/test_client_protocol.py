"""LogSearchClient against requests-mock: every branch of the query protocol."""

from __future__ import annotations

import logging
import re

import pytest
import requests
from singer_sdk.exceptions import FatalAPIError

import tap_rapid7.logsearch as client_module
import tap_rapid7.logsearch.http as http_module
import tap_rapid7.logsearch.query as query_module
from tap_rapid7.windows import Cursor, Window
from tests.tap.conftest import API_KEY, BASE, BIG, LOG, START_URL, event, page, running

WINDOW = Window(1000, 2000)


def read_all(client, window=WINDOW, resume=None, statement=None):
    report = client_module.WindowReport(LOG, window)
    records = [
        r for batch in client.read_window(LOG, window, resume, statement, report) for r in batch
    ]
    return records, report


def keys(records):
    return [(r["timestamp"], r["sequence_number_str"]) for r in records]


def test_202_then_running_200_then_page(requests_mock, make_client, fake_time):
    requests_mock.get(START_URL, status_code=202, json=running(f"{BASE}/query/q1"))
    requests_mock.get(
        f"{BASE}/query/q1",
        [
            {"status_code": 200, "json": running(f"{BASE}/query/q1", progress=50)},
            {"status_code": 200, "json": page([event(1000, BIG), event(1001, BIG - 4096)])},
        ],
    )
    records, report = read_all(make_client())
    assert keys(records) == [(1000, str(BIG)), (1001, str(BIG - 4096))]
    assert fake_time.sleeps == [1.0, 2.0]  # poll interval, then backoff
    assert report.pages == 1
    start = requests_mock.request_history[0]
    # from - 1: exact whether the server includes or excludes `from` (the reader cuts)
    assert start.qs == {"from": ["999"], "to": ["2000"], "per_page": ["3"]}
    assert start.headers["X-Api-Key"] == API_KEY


def test_a_sequence_number_no_double_can_hold_reaches_the_record_exactly(
    requests_mock, make_client
):
    odd = BIG + 1
    assert int(float(odd)) != odd  # the value a float on the way would change
    requests_mock.get(
        START_URL,
        # raw text: the JSON number as Rapid7 writes it, no sequence_number_str to fall back on
        text=f'{{"events": [{{"timestamp": 1500, "sequence_number": {odd}}}], "links": []}}',
    )
    records, _ = read_all(make_client())
    assert [(r["sequence_number"], r["sequence_number_str"]) for r in records] == [(odd, str(odd))]


def test_immediate_200_needs_no_poll(requests_mock, make_client, fake_time):
    requests_mock.get(START_URL, json=page([event(1500, BIG)]))
    records, _ = read_all(make_client())
    assert keys(records) == [(1500, str(BIG))]
    assert fake_time.sleeps == []
    assert requests_mock.call_count == 1


def test_200_running_at_start_is_polled_not_taken_as_done(requests_mock, make_client):
    requests_mock.get(START_URL, status_code=200, json=running(f"{BASE}/query/q1", progress=10))
    requests_mock.get(f"{BASE}/query/q1", json=page([event(1200, 7)]))
    records, _ = read_all(make_client())
    assert keys(records) == [(1200, "7")]


def test_async_next_and_lowercase_rels_chosen_by_rel_not_position(requests_mock, make_client):
    first = page([event(1000, 1), event(1001, 2), event(1002, 3)])
    first["links"] = [
        {"rel": "related", "href": f"{BASE}/elsewhere"},
        {"rel": "next", "href": f"{BASE}/query/logs/{LOG}?opaque=next1"},
    ]
    requests_mock.get(START_URL, json=first)
    requests_mock.get(
        f"{BASE}/query/logs/{LOG}?opaque=next1",
        status_code=202,
        json=running(f"{BASE}/query/q2", rel="self"),
    )
    requests_mock.get(f"{BASE}/query/q2", json=page([event(1003, 4)]))
    records, report = read_all(make_client())
    assert keys(records) == [(1000, "1"), (1001, "2"), (1002, "3"), (1003, "4")]
    assert report.pages == 2
    assert not any("elsewhere" in r.url for r in requests_mock.request_history)


def test_expired_next_link_restarts_from_cursor_without_loss_or_repeat(
    requests_mock, make_client, caplog
):
    # A burst of 5 events at 1500 straddles the page boundary when the link expires.
    burst = [event(1500, BIG + i * 4096) for i in range(5)]
    first = page([event(1400, 9), *burst[:2]], f"{BASE}/query/next-old")

    def start(request, context):
        if request.qs["from"] == ["999"]:
            return first
        # restarted just before the last emitted millisecond (either reading of `from`)
        assert request.qs["from"] == ["1499"]
        return page(burst[:3], f"{BASE}/query/next-new")

    requests_mock.get(START_URL, json=start)
    requests_mock.get(
        f"{BASE}/query/next-old", status_code=404, json={"message": "HTTP 404 Not Found"}
    )
    requests_mock.get(f"{BASE}/query/next-new", json=page(burst[3:]))
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        records, report = read_all(make_client())
    assert keys(records) == [(1400, "9")] + [(1500, e["sequence_number_str"]) for e in burst]
    assert report.restarts == 1
    assert report.duplicates_dropped == 2
    assert any("logsearch_retry" in m and "expired" in m for m in caplog.messages)


def test_poll_timeout_restarts_the_query(requests_mock, make_client):
    calls = {"n": 0}

    def start(request, context):
        calls["n"] += 1
        if calls["n"] == 1:
            context.status_code = 202
            return running(f"{BASE}/query/slow")
        return page([event(1001, 5)])

    requests_mock.get(START_URL, json=start)
    requests_mock.get(f"{BASE}/query/slow", json=running(f"{BASE}/query/slow", progress=1))
    records, report = read_all(make_client(poll_timeout_seconds=5.0))
    assert keys(records) == [(1001, "5")]
    assert report.restarts == 1


def test_restarts_are_bounded(requests_mock, make_client):
    requests_mock.get(START_URL, json=page([event(1001, 1)], f"{BASE}/query/gone"))
    requests_mock.get(f"{BASE}/query/gone", status_code=404, json={"message": "HTTP 404 Not Found"})
    with pytest.raises(FatalAPIError, match="restarted 2 times"):
        read_all(make_client(max_restarts=2))


@pytest.mark.parametrize(
    ("headers", "expected_wait"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"X-RateLimit-Reset": "5"}, 5.0),  # a delta
        ({"X-RateLimit-Reset": str(1_700_000_000 + 12)}, 12.0),  # an epoch
        ({}, 0.5),  # neither: exponential backoff from backoff_base_seconds
    ],
    ids=["retry-after", "reset-delta", "reset-epoch", "no-header"],
)
def test_429_waits_as_the_server_says(
    requests_mock, make_client, fake_time, headers, expected_wait
):
    requests_mock.get(
        START_URL,
        [
            {"status_code": 429, "headers": headers, "json": {"message": "Too Many Requests"}},
            {"status_code": 200, "json": page([event(1001, 1)])},
        ],
    )
    client = make_client()
    records, _ = read_all(client)
    assert len(records) == 1
    assert fake_time.sleeps == [expected_wait]
    assert client.pacer.snapshot()["query_rate_limited"] == 1


def test_retry_after_takes_precedence_over_reset(requests_mock, make_client, fake_time):
    requests_mock.get(
        START_URL,
        [
            {"status_code": 429, "headers": {"Retry-After": "3", "X-RateLimit-Reset": "99"}},
            {"status_code": 200, "json": page([])},
        ],
    )
    read_all(make_client())
    assert fake_time.sleeps == [3.0]


def test_exhausted_remaining_budget_holds_every_request(requests_mock, make_client, fake_time):
    requests_mock.get(
        START_URL,
        json=page([event(1001, 1)], f"{BASE}/query/n"),
        headers={"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4"},
    )
    requests_mock.get(f"{BASE}/query/n", json=page([event(1002, 2)]))
    records, _ = read_all(make_client())
    assert len(records) == 2
    assert fake_time.sleeps == [4.0]  # waited for the reset before the Next request


def test_5xx_and_dropped_connections_retry_with_backoff(requests_mock, make_client, fake_time):
    requests_mock.get(
        START_URL,
        [
            {"status_code": 503, "text": "unavailable"},
            {"exc": requests.ConnectionError("reset by peer")},
            {"exc": requests.Timeout("slow")},
            {"status_code": 200, "json": page([event(1001, 1)])},
        ],
    )
    records, _ = read_all(make_client())
    assert len(records) == 1
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


def test_5xx_retries_are_bounded(requests_mock, make_client):
    requests_mock.get(START_URL, status_code=502, text="bad gateway")
    with pytest.raises(FatalAPIError, match="after 4 attempts"):
        read_all(make_client(max_retries=3))
    assert requests_mock.call_count == 4


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_fatal_and_never_show_the_key(requests_mock, make_client, status):
    requests_mock.get(START_URL, status_code=status, json={"message": "Unauthorized"})
    with pytest.raises(FatalAPIError) as info:
        read_all(make_client())
    assert "api_key" in str(info.value)
    assert str(status) in str(info.value)
    assert API_KEY not in str(info.value)
    assert requests_mock.call_count == 1


def test_400_is_fatal_with_the_servers_message(requests_mock, make_client):
    requests_mock.get(
        START_URL,
        status_code=400,
        json={"errorCode": 101004, "message": "Invalid LEQL near 'wher'"},
    )
    with pytest.raises(client_module.QueryRejectedError, match="Invalid LEQL near 'wher'") as info:
        read_all(make_client(), statement="wher(x)")
    assert "101004" in str(info.value)


def test_unknown_log_is_fatal_and_names_it(requests_mock, make_client):
    requests_mock.get(START_URL, status_code=404, json={"message": "HTTP 404 Not Found"})
    with pytest.raises(FatalAPIError, match=f"no log with id '{LOG}'.*log_ids"):
        read_all(make_client())


def test_running_query_without_self_link_is_fatal(requests_mock, make_client):
    requests_mock.get(START_URL, status_code=202, json={"progress": 0, "events": []})
    with pytest.raises(FatalAPIError, match="no Self link"):
        read_all(make_client())


def test_stall_warning_when_next_does_not_advance(requests_mock, make_client, caplog):
    # A burst larger than a page: the max timestamp stays at 1500 while Next continues.
    burst = [event(1500, 100 + i) for i in range(7)]
    requests_mock.get(START_URL, json=page(burst[:3], f"{BASE}/query/p2"))
    requests_mock.get(f"{BASE}/query/p2", json=page(burst[3:6], f"{BASE}/query/p3"))
    requests_mock.get(f"{BASE}/query/p3", json=page(burst[6:]))
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        records, report = read_all(make_client())
    assert len(records) == 7
    stalled = [
        r for r in caplog.records if r.getMessage().startswith("logsearch_pagination_stalled")
    ]
    assert len(stalled) == 1
    assert stalled[0].page == 2
    assert stalled[0].page_max_event_timestamp == 1500
    assert report.stalls == 1


def test_repeated_next_href_restarts_instead_of_looping(requests_mock, make_client):
    calls = {"n": 0}

    def start(request, context):
        calls["n"] += 1
        if calls["n"] == 1:
            return page([event(1001, 1)], f"{BASE}/query/loop")
        return page([event(1001, 1), event(1002, 2)])

    requests_mock.get(START_URL, json=start)
    requests_mock.get(f"{BASE}/query/loop", json=page([event(1001, 1)], f"{BASE}/query/loop"))
    records, report = read_all(make_client())
    assert keys(records) == [(1001, "1"), (1002, "2")]
    assert report.restarts == 1


def test_next_means_finished_and_self_alone_means_running(requests_mock, make_client, fake_time):
    # §11: complete when no link is Self; a body with Next is complete too (Rapid7's client).
    first = page([event(1000, 1)], f"{BASE}/query/n2")
    first["links"].append({"rel": "Self", "href": f"{BASE}/query/q1"})
    requests_mock.get(START_URL, json=first)
    running_with_events = page([event(1001, 2)])
    running_with_events["links"] = [{"rel": "Self", "href": f"{BASE}/query/q2"}]
    requests_mock.get(f"{BASE}/query/n2", json=running_with_events)
    requests_mock.get(f"{BASE}/query/q2", json=page([event(1001, 2), event(1002, 3)]))
    records, report = read_all(make_client())
    assert keys(records) == [(1000, "1"), (1001, "2"), (1002, "3")]
    assert fake_time.sleeps == [1.0]  # one poll of the page that still named itself
    assert [r.url.split("?")[0] for r in requests_mock.request_history][1:] == [
        f"{BASE}/query/n2",
        f"{BASE}/query/q2",
    ]
    assert report.pages == 2


def test_endless_empty_pages_with_next_fail_loudly_instead_of_looping(requests_mock, make_client):
    served = {"n": 0}

    def empty_with_fresh_next(request, context):
        served["n"] += 1
        return page([], f"{BASE}/query/e{served['n']}")

    requests_mock.get(START_URL, json=empty_with_fresh_next)
    requests_mock.get(re.compile(rf"{re.escape(BASE)}/query/e\d+"), json=empty_with_fresh_next)
    client = make_client()
    with pytest.raises(FatalAPIError, match="restart"):
        read_all(client)
    bound = (client.protocol.max_restarts + 1) * query_module.MAX_EMPTY_PAGES_WITH_NEXT
    assert served["n"] == bound


def test_each_response_is_decoded_exactly_once(requests_mock, make_client, monkeypatch):
    calls = []
    real = http_module.decode_json

    def counting(content):
        calls.append(len(content))
        return real(content)

    monkeypatch.setattr(http_module, "decode_json", counting)
    requests_mock.get(START_URL, status_code=202, json=running(f"{BASE}/query/q"))
    requests_mock.get(
        f"{BASE}/query/q",
        [
            {"json": running(f"{BASE}/query/q", 30)},
            {"json": running(f"{BASE}/query/q", 60)},
            {"json": page([event(1001, 1), event(1002, 2), event(1003, 3)], f"{BASE}/query/n")},
        ],
    )
    requests_mock.get(f"{BASE}/query/n", json=page([event(1004, 4)]))
    records, _ = read_all(make_client())
    assert len(records) == 4
    assert len(calls) == requests_mock.call_count == 5


def test_sequence_numbers_stay_exact_above_2_53(requests_mock, make_client):
    # The numeric field is what a double-based encoder produced; the string is exact.
    text = (
        '{"events":['
        '{"timestamp":1001,"sequence_number":3235937417370673000,'
        '"sequence_number_str":"3235937417370673152","log_id":"log-a","message":"{\\"a\\":1}",'
        '"labels":[{"id":"00000000-0000-0000-0000-000000000006"}]},'
        '{"timestamp":1002,"sequence_number":9223372036854775807,"log_id":"log-a",'
        '"message":"not json"}]}'
    )
    requests_mock.get(START_URL, text=text)
    label = {"id": "00000000-0000-0000-0000-000000000006", "name": "Out of order entry"}
    requests_mock.get(f"{BASE}/management/labels", json={"labels": [label]})
    records, _ = read_all(make_client())
    assert records[0]["sequence_number"] == 3235937417370673152
    assert records[0]["sequence_number_str"] == "3235937417370673152"
    assert records[0]["message"] == '{"a":1}'
    assert records[0]["labels"] == [{"id": "00000000-0000-0000-0000-000000000006"}]
    assert records[0]["label_names"] == ["Out of order entry"]
    assert records[0]["received_at"] == "1970-01-01T00:00:01.001+00:00"
    assert records[0]["event_time"] is None  # event_time_fields not set
    assert records[1]["sequence_number"] == 2**63 - 1
    assert records[1]["sequence_number_str"] == str(2**63 - 1)


def test_server_treating_to_as_inclusive_is_cut_to_half_open(requests_mock, make_client):
    requests_mock.get(START_URL, json=page([event(1999, 1), event(2000, 2), event(2000, 3)]))
    records, report = read_all(make_client())
    assert keys(records) == [(1999, "1")]
    assert report.out_of_window_dropped == 2


def test_resume_inside_a_millisecond_skips_exactly_what_was_emitted(requests_mock, make_client):
    burst = [event(1500, BIG + i * 4096) for i in range(4)]
    requests_mock.get(START_URL, json=page([*burst, event(1501, 5)]))
    resume = Cursor(1500, BIG + 4096)
    records, report = read_all(make_client(per_page=10), Window(1500, 2000), resume)
    assert keys(records) == [(1500, str(BIG + 2 * 4096)), (1500, str(BIG + 3 * 4096)), (1501, "5")]
    assert report.resume_skipped == 2
    assert requests_mock.request_history[0].qs["from"] == ["1499"]


def test_page_and_window_log_lines_carry_the_counts(requests_mock, make_client, caplog):
    requests_mock.get(START_URL, json=page([event(1100, 1), event(1100, 1), event(2000, 3)]))
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        read_all(make_client())
    by_event = {r.event_name: r for r in caplog.records}
    page_line = by_event["logsearch_page_complete"]
    assert (page_line.page_min_event_timestamp, page_line.page_max_event_timestamp) == (1100, 2000)
    assert (page_line.window_from, page_line.window_to) == (1000, 2000)
    assert page_line.events_total == 1
    assert page_line.next_from_millis == 1100
    done = by_event["logsearch_window_complete"]
    assert (done.events, done.duplicates_dropped, done.out_of_window_dropped) == (1, 1, 1)


def test_debug_output_never_contains_the_api_key(requests_mock, make_client, caplog):
    leaky = {"message": f"echo {API_KEY}", "events": []}
    requests_mock.get(
        START_URL,
        [{"status_code": 500, "json": leaky}, {"status_code": 200, "json": page([event(1001, 1)])}],
    )
    requests_mock.get(f"{BASE}/management/logs", status_code=418, json=leaky)
    client = make_client()
    with caplog.at_level(logging.DEBUG):
        read_all(client)
        with pytest.raises(FatalAPIError) as info:
            client.list_logs()
    assert any("logsearch_response" in m for m in caplog.messages)  # previews were logged
    assert API_KEY not in caplog.text
    assert API_KEY not in str(info.value)
    assert "[REDACTED]" in str(info.value)


def test_management_lists(requests_mock, make_client):
    requests_mock.get(f"{BASE}/management/logs", json={"logs": [{"id": "a"}, {"id": "b"}]})
    requests_mock.get(f"{BASE}/management/logsets", json={"logsets": [{"id": "s"}]})
    client = make_client()
    assert [log["id"] for log in client.list_logs()] == ["a", "b"]
    assert client.list_logsets() == [{"id": "s"}]


# Events per millisecond of a fake log for the count tests: edges on both sides.
COUNT_EVENTS = {999: 2, 1000: 3, 1500: 4, 1999: 1, 2000: 5}


def _count_server(requests_mock, from_inclusive: bool, to_inclusive: bool):
    """A server with one reading of the bounds, for both count and event queries."""

    def inside(ts: int, low: int, high: int) -> bool:
        above = ts >= low if from_inclusive else ts > low
        below = ts <= high if to_inclusive else ts < high
        return above and below

    def start(request, context):
        low, high = int(request.qs["from"][0]), int(request.qs["to"][0])
        stamps = [ts for ts, n in COUNT_EVENTS.items() for _ in range(n) if inside(ts, low, high)]
        if "calculate(count)" in request.qs.get("query", [""])[0]:
            assert "per_page" not in request.qs  # statistical queries reject per_page
            assert request.qs["query"] == ["where(x) calculate(count)"]
            context.status_code = 202
            return {
                "progress": 0,
                "links": [{"rel": "Self", "href": f"{BASE}/query/c{len(stamps)}"}],
            }
        return page([event(ts, 100 + i) for i, ts in enumerate(stamps)])

    requests_mock.get(START_URL, json=start)
    for n in range(sum(COUNT_EVENTS.values()) + 1):
        requests_mock.get(f"{BASE}/query/c{n}", json={"statistics": {"type": "count", "count": n}})


@pytest.mark.parametrize("from_inclusive", [True, False])
@pytest.mark.parametrize("to_inclusive", [True, False])
def test_count_is_half_open_under_every_reading_of_the_bounds(
    requests_mock, make_client, from_inclusive, to_inclusive
):
    _count_server(requests_mock, from_inclusive, to_inclusive)
    # [1000, 2000): 3 + 4 + 1, never the 2 events at 999 nor the 5 at 2000
    assert make_client(per_page=50).count(LOG, 1000, 2000, "where(x)") == 8


def test_count_start_answer_that_is_not_statistics_is_retried_then_fatal(
    requests_mock, make_client
):
    requests_mock.get(START_URL, json={"events": []})
    with pytest.raises(FatalAPIError, match=r"without statistics.count.*log_id=log-a"):
        make_client().count(LOG, 1000, 2000)
    assert requests_mock.call_count == 4  # max_retries=3: the first try and three retries


def _answer_count(requests_mock, count: float) -> None:
    """The count query answers ``count``; the edge pages the count also reads are empty."""

    def start(request, context):
        if "calculate(count)" in request.qs.get("query", [""])[0]:
            return {"statistics": {"type": "count", "count": count}}
        return page([])

    requests_mock.get(START_URL, json=start)


@pytest.mark.parametrize("count", [2.5, -0.5])
def test_a_count_that_is_not_a_whole_number_is_no_count(requests_mock, make_client, count):
    _answer_count(requests_mock, count)
    with pytest.raises(FatalAPIError, match=r"is not a whole number"):
        make_client().count(LOG, 1000, 2000)


def test_a_whole_count_sent_as_a_float_is_a_count(requests_mock, make_client):
    _answer_count(requests_mock, 1234.0)
    assert make_client().count(LOG, 1000, 2000) == 1234


def test_from_config_builds_region_urls_and_validates():
    client = client_module.LogSearchClient.from_config({"api_key": "k", "region": "eu"})
    assert (
        client.url("/management/logs") == "https://eu.rest.logs.insight.rapid7.com/management/logs"
    )
    with pytest.raises(FatalAPIError, match="region"):
        client_module.LogSearchClient.from_config({"api_key": "k", "region": "mars"})
    with pytest.raises(FatalAPIError, match="per_page"):
        client_module.LogSearchClient.from_config({"api_key": "k", "per_page": 501})


def test_from_config_accepts_decimal_numbers_as_the_sdk_parses_them():
    from decimal import Decimal

    client = client_module.LogSearchClient.from_config(
        {"api_key": "k", "poll_interval_seconds": Decimal("0.25"), "per_page": Decimal(100)}
    )
    assert client.protocol.poll_interval_seconds == 0.25
    assert isinstance(client.protocol.poll_interval_seconds, float)
    assert client.per_page == 100


def test_many_expiries_that_each_make_progress_do_not_fail_the_window(requests_mock, make_client):
    # Every Next link expires, but each restarted query gets one page further first.
    events = [event(1000 + i, i) for i in range(12)]

    def start(request, context):
        offset = max(0, int(request.qs["from"][0]) + 1 - 1000)  # asked from `from - 1`
        chunk = events[offset : offset + 3]
        more = offset + 3 < len(events)
        return page(chunk, f"{BASE}/query/expired-{offset}" if more else None)

    requests_mock.get(START_URL, json=start)
    requests_mock.get(
        re.compile(re.escape(BASE) + r"/query/expired-\d+"),
        status_code=404,
        json={"message": "HTTP 404 Not Found"},
    )
    records, report = read_all(make_client(max_restarts=1))
    assert keys(records) == [(e["timestamp"], e["sequence_number_str"]) for e in events]
    assert report.restarts == 5  # more than max_restarts, but never two without progress
