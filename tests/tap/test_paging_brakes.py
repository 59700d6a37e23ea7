"""Brakes on paging, values at the edge, and the cost of a query that never finishes (issue 19).

Before: a chain with the same event on every page under a fresh href ran 1,340 pages in 60 s;
one with events past ``to`` and rising timestamps 1,355 pages, without a warning; a query that
never finished failed only after (max_restarts + 1) x poll_timeout_seconds (an hour); a
sequence number of 2^64 + 5 became a record the target then refused forever.
"""

from __future__ import annotations

import itertools
import logging
import re

import pytest
from singer_sdk.exceptions import FatalAPIError

import tap_rapid7.logsearch.window_reader as reader_module
from tap_rapid7.logsearch import InvalidPageError, WindowReport
from tap_rapid7.settings import TapSettings
from tap_rapid7.windows import Window
from tests.tap.conftest import BASE, LOG, START_URL, event, page, running

WINDOW = Window(1000, 2000)
NEXT = re.compile(re.escape(BASE) + r"/query/n\d+")


def read_all(client, window=WINDOW):
    report = WindowReport(LOG, window)
    records = [r for batch in client.read_window(LOG, window, None, None, report) for r in batch]
    return records, report


def fresh_links():
    numbers = itertools.count(1)
    return lambda: f"{BASE}/query/n{next(numbers)}"


def retries(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("logsearch_retry ")]


def test_the_same_event_under_fresh_links_restarts_then_fails_naming_the_path(
    requests_mock, make_client, caplog
):
    link = fresh_links()
    served = {"pages": 0}

    def same_event(request, context):
        served["pages"] += 1
        return page([event(1500, 7)], link())

    requests_mock.get(START_URL, json=same_event)
    requests_mock.get(NEXT, json=same_event)
    client = make_client(max_restarts=2)
    with (
        caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"),
        pytest.raises(FatalAPIError) as failed,
    ):
        read_all(client)
    message = str(failed.value)
    assert message.startswith(f"query for log '{LOG}' window [1000, 2000) restarted 2 times")
    assert "page without new entries" in message
    assert re.search(r"at /query/n\d+\)", message)  # the URL path of the page
    # each query: its first page, then one page repeating it; max_restarts + 1 queries
    assert served["pages"] == 2 * (2 + 1)
    assert [r.reason for r in retries(caplog)] == ["page without new entries"] * 2
    assert all(re.fullmatch(r"/query/n\d+", r.path) for r in retries(caplog))


def test_events_after_the_window_on_a_continuation_page_restart_then_fail(
    requests_mock, make_client, caplog
):
    link = fresh_links()
    clock = itertools.count(2000)

    def start(request, context):
        return page([event(1200, 1), event(1300, 2)], link())

    def beyond(request, context):
        stamp = next(clock)
        return page([event(stamp, 3), event(stamp + 1, 4)], link())  # rising, past `to`

    requests_mock.get(START_URL, json=start)
    requests_mock.get(NEXT, json=beyond)
    with (
        caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"),
        pytest.raises(FatalAPIError, match="events after the window") as failed,
    ):
        read_all(make_client(max_restarts=3))
    assert "holds 2 events after 2000" in str(failed.value)
    assert re.search(r"at /query/n\d+\)", str(failed.value))
    assert requests_mock.call_count == 2 * (3 + 1)
    assert len(retries(caplog)) == 3  # a WARNING for each restart


def test_a_to_inclusive_last_page_is_not_braked(requests_mock, make_client):
    """`to` itself on a page (a server including `to`) is not past the window; it is cut."""
    requests_mock.get(START_URL, json=page([event(1998, 1), event(1999, 2)], f"{BASE}/query/n1"))
    requests_mock.get(f"{BASE}/query/n1", json=page([event(1999, 3), event(2000, 4)]))
    records, report = read_all(make_client())
    assert [r["sequence_number"] for r in records] == [1, 2, 3]
    assert report.restarts == 0
    assert report.out_of_window_dropped == 1


def test_a_long_legitimate_burst_is_not_braked(requests_mock, make_client):
    """A continuation page in the same millisecond brings new identities: it goes on."""
    burst = [event(1500, 100 + i) for i in range(8)]
    requests_mock.get(START_URL, json=page(burst[:3], f"{BASE}/query/n1"))
    requests_mock.get(f"{BASE}/query/n1", json=page(burst[3:6], f"{BASE}/query/n2"))
    requests_mock.get(f"{BASE}/query/n2", json=page(burst[6:]))
    records, report = read_all(make_client())
    assert len(records) == 8
    assert report.restarts == 0


def endless_fresh_events(requests_mock, count_body):
    """Every page brings new in-window events and a fresh Next; the count says what it says."""
    link = fresh_links()
    seqs = itertools.count(1)
    calls = {"count": 0, "pages": 0}

    def answer(request, context):
        if "calculate(count)" in request.qs.get("query", [""])[0]:
            calls["count"] += 1
            return count_body
        calls["pages"] += 1
        return page([event(1000 + (n := next(seqs)) % 900, n) for _ in range(3)], link())

    requests_mock.get(START_URL, json=answer)
    requests_mock.get(NEXT, json=answer)
    return calls


def test_more_pages_than_the_count_allows_ends_the_run(requests_mock, make_client, caplog):
    calls = endless_fresh_events(requests_mock, {"statistics": {"count": 30}})
    with (
        caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"),
        pytest.raises(FatalAPIError, match="more pages than the window holds") as failed,
    ):
        read_all(make_client(max_restarts=2))
    # 30 events at 3 a page: 10 pages, plus a tenth and 2 = 13; counted once, at page 20
    assert "the window's count needs at most 13" in str(failed.value)
    assert calls["count"] == 1
    assert calls["pages"] == reader_module.COUNT_AFTER_PAGES + 2
    limits = [r for r in caplog.records if r.getMessage().startswith("logsearch_page_limit ")]
    assert [(r.count, r.max_pages) for r in limits] == [(30, 13)]


def test_without_a_count_a_fixed_bound_still_ends_the_run(
    requests_mock, make_client, caplog, monkeypatch
):
    monkeypatch.setattr(reader_module, "MAX_PAGES_WITHOUT_COUNT", 25)
    calls = endless_fresh_events(requests_mock, {"no": "statistics"})  # an unusable answer
    with (
        caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"),
        pytest.raises(FatalAPIError, match="count needs at most 25"),
    ):
        read_all(make_client(max_restarts=1, max_retries=0))
    assert calls["pages"] == 25 + 1
    assert any(r.getMessage().startswith("logsearch_count_unavailable ") for r in caplog.records)


def test_a_window_within_its_count_reads_to_its_end(requests_mock, make_client):
    """Past COUNT_AFTER_PAGES the count is asked, and a window it covers is read whole."""
    events = [event(1000 + i, i) for i in range(75)]  # 25 pages of 3

    def answer(request, context):
        if "calculate(count)" in request.qs.get("query", [""])[0]:
            return {"statistics": {"count": 75}}
        offset = int(request.qs.get("offset", ["0"])[0])
        nxt = f"{START_URL}?from=999&to=2000&per_page=3&offset={offset + 3}"
        return page(events[offset : offset + 3], nxt if offset + 3 < len(events) else None)

    requests_mock.get(START_URL, json=answer)
    records, report = read_all(make_client())
    assert len(records) == 75
    assert report.restarts == 0
    assert report.pages == 25
    # the budget: one count query for the whole window, the pages' queries unchanged
    counts = [r for r in requests_mock.request_history if "calculate" in r.qs.get("query", [""])[0]]
    assert len(counts) == 1
    assert len(requests_mock.request_history) == 25 + 1


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("sequence_number", 2**64 + 5, f"has a sequence_number outside int64 ({2**64 + 5})"),
        ("sequence_number", 2**63, f"has a sequence_number outside int64 ({2**63})"),
        ("sequence_number", -(2**63) - 1, "has a sequence_number outside int64"),
        ("timestamp", 2**63, f"has a timestamp outside int64 ({2**63})"),
    ],
)
def test_values_outside_int64_are_an_invalid_page_never_a_record(
    requests_mock, make_client, field, value, problem
):
    bad = event(1500, 7)
    bad[field] = value
    if field == "sequence_number":
        bad["sequence_number_str"] = str(value)
    requests_mock.get(START_URL, json=page([event(1400, 1), bad]))
    with pytest.raises(InvalidPageError) as failed:
        read_all(make_client())
    assert f"log '{LOG}'" in str(failed.value)
    assert "event 1 of page 1" in str(failed.value)
    assert problem in str(failed.value)


def test_the_edges_of_int64_are_records(requests_mock, make_client):
    top = event(1500, 2**63 - 1)
    requests_mock.get(START_URL, json=page([event(1400, -(2**63)), top]))
    records, _ = read_all(make_client())
    assert [r["sequence_number"] for r in records] == [-(2**63), 2**63 - 1]


@pytest.mark.parametrize("text", [" 7", "+7", "7_0", "٣", ""])
def test_a_sequence_number_string_that_is_not_plain_decimal_is_refused(
    requests_mock, make_client, text
):
    bad = event(1500, 7)
    bad["sequence_number_str"] = text
    if not text:
        del bad["sequence_number"]
    requests_mock.get(START_URL, json=page([bad]))
    with pytest.raises(InvalidPageError, match="has no usable sequence_number"):
        read_all(make_client())


def test_a_query_that_never_finishes_fails_after_two_poll_timeouts(
    requests_mock, make_client, fake_time
):
    """The defaults (poll_timeout_seconds 600, max_restarts 5) cost 20 minutes, not an hour."""
    defaults = TapSettings(api_key="k")
    requests_mock.get(START_URL, status_code=202, json=running(f"{BASE}/query/forever"))
    requests_mock.get(f"{BASE}/query/forever", json=running(f"{BASE}/query/forever"))
    client = make_client(
        poll_timeout_seconds=defaults.poll_timeout_seconds,
        max_restarts=defaults.max_restarts,
        poll_interval_seconds=defaults.poll_interval_seconds,
        poll_interval_max_seconds=defaults.poll_interval_max_seconds,
    )
    started = fake_time.now
    with pytest.raises(FatalAPIError) as failed:
        read_all(client)
    spent = fake_time.now - started
    assert str(failed.value) == (
        f"query for log '{LOG}' window [1000, 2000) was still running after "
        "poll_timeout_seconds (600 s), 2 times in a row without progress (at /query/forever); "
        "giving up (setting poll_timeout_seconds)"
    )
    starts = [r for r in requests_mock.request_history if r.path == f"/query/logs/{LOG}"]
    assert len(starts) == 2  # restarted once, not max_restarts times
    assert defaults.poll_timeout_seconds == 600
    assert 2 * 600 <= spent <= 2 * (600 + defaults.poll_interval_max_seconds)


def test_a_poll_timeout_after_progress_is_restarted_again(requests_mock, make_client):
    """Two timeouts fail the window only when nothing came between them."""
    calls = {"n": 0}

    def start(request, context):
        calls["n"] += 1
        if calls["n"] == 1:  # never finishes: timeout 1
            context.status_code = 202
            return running(f"{BASE}/query/slow")
        if calls["n"] == 2:  # a page, then a Next that never finishes: timeout 2
            return page([event(1100, 1)], f"{BASE}/query/slow-next")
        return page([event(1100, 1), event(1200, 2)])

    requests_mock.get(START_URL, json=start)
    requests_mock.get(f"{BASE}/query/slow", json=running(f"{BASE}/query/slow"))
    requests_mock.get(
        f"{BASE}/query/slow-next", status_code=202, json=running(f"{BASE}/query/slow")
    )
    records, report = read_all(make_client(poll_timeout_seconds=30.0))
    assert [r["sequence_number"] for r in records] == [1, 2]
    assert report.restarts == 2  # a timeout, then one after progress: not two in a row


def test_a_group_query_that_never_finishes_fails_after_two_poll_timeouts(
    requests_mock, make_client
):
    requests_mock.post(f"{BASE}/query/logs", status_code=202, json=running(f"{BASE}/query/forever"))
    requests_mock.get(f"{BASE}/query/forever", json=running(f"{BASE}/query/forever"))
    client = make_client(poll_timeout_seconds=600.0)
    with pytest.raises(FatalAPIError, match=r"logs log-a\+1 .* 2 times in a row"):
        list(client.read_group((LOG, "log-b"), WINDOW, {}))
    assert sum(1 for r in requests_mock.request_history if r.method == "POST") == 2


def test_a_count_that_never_finishes_fails_after_two_poll_timeouts(requests_mock, make_client):
    requests_mock.get(START_URL, status_code=202, json=running(f"{BASE}/query/forever"))
    requests_mock.get(f"{BASE}/query/forever", json=running(f"{BASE}/query/forever"))
    client = make_client(poll_timeout_seconds=600.0)
    with pytest.raises(FatalAPIError, match=r"count query .* 2 times in a row"):
        client.count(LOG, 1000, 2000)
    assert sum(1 for r in requests_mock.request_history if r.path == f"/query/logs/{LOG}") == 2


# ------------------------------------------------------- legitimate chains the brakes must let by
def test_a_burst_in_the_millisecond_before_from_fills_pages_without_a_brake(
    requests_mock, make_client
):
    # the reader asks from `from - 1`; a from-inclusive server serves 6 entries there (2 pages)
    requests_mock.get(
        START_URL, json=page([event(999, i) for i in range(1, 4)], f"{BASE}/query/n1")
    )
    requests_mock.get(
        f"{BASE}/query/n1", json=page([event(999, i) for i in range(4, 7)], f"{BASE}/query/n2")
    )
    requests_mock.get(f"{BASE}/query/n2", json=page([event(1000, 7), event(1500, 8)]))
    records, report = read_all(make_client(max_restarts=2))
    assert [r["sequence_number"] for r in records] == [7, 8]
    assert report.restarts == 0


def test_a_burst_at_to_from_a_to_inclusive_server_fills_pages_without_a_brake(
    requests_mock, make_client
):
    first = page([event(1500, 1), event(2000, 2), event(2000, 3)], f"{BASE}/query/n1")
    requests_mock.get(START_URL, json=first)
    requests_mock.get(
        f"{BASE}/query/n1", json=page([event(2000, i) for i in range(4, 7)], f"{BASE}/query/n2")
    )
    requests_mock.get(f"{BASE}/query/n2", json=page([event(2000, 7)]))
    records, report = read_all(make_client(max_restarts=2))
    assert [r["sequence_number"] for r in records] == [1]
    assert report.restarts == 0


@pytest.mark.parametrize("count", [1e18, -5])
def test_a_count_that_is_no_number_of_events_keeps_the_fixed_page_bound(
    requests_mock, make_client, caplog, monkeypatch, count
):
    monkeypatch.setattr(reader_module, "MAX_PAGES_WITHOUT_COUNT", 30)
    links, sequences = itertools.count(1), itertools.count(1)

    def answer(request, context):
        if "calculate(count)" in request.qs.get("query", [""])[0]:
            return {"statistics": {"count": count}}
        fresh = [event(1000 + (n := next(sequences)) % 900, n) for _ in range(3)]
        return page(fresh, f"{BASE}/query/n{next(links)}")

    requests_mock.get(START_URL, json=answer)
    requests_mock.get(NEXT, json=answer)
    with caplog.at_level(logging.WARNING), pytest.raises(FatalAPIError, match="more pages than"):
        read_all(make_client(max_restarts=1))
    unavailable = [r.getMessage() for r in caplog.records if "count_unavailable" in r.getMessage()]
    assert unavailable
    assert "is not a number of events" in unavailable[0]
    assert "max_pages=30" in unavailable[0]
    assert next(links) < 3 * 30  # bounded by the fixed bound, not by the count's 2e15 pages
