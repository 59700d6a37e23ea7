"""The Log Search client under every reading of Rapid7's published contract (§11), one branch each.

requests-mock servers that differ from the emulator in one point each: ``from`` exclusive,
sequence numbers recurring across milliseconds, 200 answers that are not pages, malformed
events, 400 on a continuation, ``x-beyond-retention``.
"""

from __future__ import annotations

import logging

import pytest
from singer_sdk.exceptions import FatalAPIError

from tap_rapid7.logsearch import InvalidPageError, WindowReport
from tap_rapid7.windows import Cursor, Window
from tests.tap.conftest import API_KEY, BASE, LOG, START_URL, event, page, running

WINDOW = Window(1000, 2000)


def read_all(client, window=WINDOW, resume=None):
    report = WindowReport(LOG, window)
    records = [r for batch in client.read_window(LOG, window, resume, None, report) for r in batch]
    return records, report


def identities(records):
    return [(r["log_id"], r["timestamp"], r["sequence_number_str"]) for r in records]


class ReadingServer:
    """Serves a fixed list of (ts, seq) entries with one reading of ``from``/``to``.

    ``Next`` links are in Rapid7's own form (``from=<last ts>&sequence_number=<last seq>``) and
    start a new query; ``sequence_number`` means "entries of the ``from`` millisecond with a
    larger sequence number, and everything after it".
    """

    def __init__(self, entries, *, from_inclusive=True, to_inclusive=False, per_page=3):
        self.entries = sorted(entries)
        self.from_inclusive = from_inclusive
        self.to_inclusive = to_inclusive
        self.per_page = per_page
        self.starts: list[dict] = []

    def install(self, requests_mock):
        requests_mock.get(START_URL, json=self.answer)

    def answer(self, request, context):
        qs = {k: v[0] for k, v in request.qs.items()}
        self.starts.append(qs)
        low, high = int(qs["from"]), int(qs["to"])
        after = int(qs["sequence_number"]) if "sequence_number" in qs else None

        def inside(ts, seq):
            if ts == low and after is not None:
                above = seq > after
            else:
                above = ts >= low if self.from_inclusive else ts > low
            below = ts <= high if self.to_inclusive else ts < high
            return above and below

        selected = [(ts, seq) for ts, seq in self.entries if inside(ts, seq)]
        chunk = selected[: self.per_page]
        body = page([event(ts, seq) for ts, seq in chunk])
        if len(selected) > self.per_page:
            last_ts, last_seq = chunk[-1]
            body["links"] = [
                {
                    "rel": "Next",
                    "href": f"{START_URL}?from={last_ts}&to={high}&per_page={self.per_page}"
                    f"&sequence_number={last_seq}&next_page=true",
                }
            ]
        return body


# Entries with sequence numbers that recur in every millisecond (a per-millisecond counter),
# bursts on both window edges and on the millisecond before the window.
RECURRING = (
    [(999, s) for s in range(4)]
    + [(1000, s) for s in range(5)]
    + [(1500, s) for s in range(2)]
    + [(1999, s) for s in range(4)]
    + [(2000, s) for s in range(3)]
)
IN_WINDOW = [(LOG, ts, str(s)) for ts, s in RECURRING if 1000 <= ts < 2000]


@pytest.mark.parametrize("from_inclusive", [True, False], ids=["from-incl", "from-excl"])
@pytest.mark.parametrize("to_inclusive", [True, False], ids=["to-incl", "to-excl"])
def test_exact_window_under_every_reading_with_recurring_sequence_numbers(
    requests_mock, make_client, from_inclusive, to_inclusive
):
    server = ReadingServer(RECURRING, from_inclusive=from_inclusive, to_inclusive=to_inclusive)
    server.install(requests_mock)
    records, report = read_all(make_client())
    assert identities(records) == IN_WINDOW
    assert report.duplicates_dropped == 0
    assert server.starts[0]["from"] == "999"  # one millisecond early, cut by the reader


@pytest.mark.parametrize("from_inclusive", [True, False], ids=["from-incl", "from-excl"])
def test_resume_inside_a_burst_of_recurring_sequence_numbers(
    requests_mock, make_client, from_inclusive
):
    # The previous run emitted (1000, 0..2); sequence numbers 0..4 also exist at 999 and 1999.
    ReadingServer(RECURRING, from_inclusive=from_inclusive).install(requests_mock)
    records, report = read_all(make_client(), resume=Cursor(1000, 2))
    assert identities(records) == IN_WINDOW[3:]
    assert report.resume_skipped == 3


def test_restart_after_an_expired_next_keeps_recurring_sequence_numbers_apart(
    requests_mock, make_client
):
    # Page 1 ends inside the 1000 burst; its Next expires; the restart re-reads from 999.
    server = ReadingServer(RECURRING, per_page=6)
    calls = {"n": 0}

    def answer(request, context):
        calls["n"] += 1
        if calls["n"] == 2:  # the first Next: expired
            context.status_code = 404
            return {"message": "HTTP 404 Not Found"}
        return server.answer(request, context)

    requests_mock.get(START_URL, json=answer)
    records, report = read_all(make_client())
    assert identities(records) == IN_WINDOW
    assert report.restarts == 1
    restarted = server.starts[1]  # starts[0] was the first query; the expired Next got a 404
    assert (restarted["from"], "sequence_number" in restarted) == ("999", False)


NON_PAGES = [
    pytest.param({}, id="empty-object"),
    pytest.param({"events": None}, id="events-null"),
    pytest.param({"logs": [LOG], "leql": {"statement": ""}}, id="no-events-key"),
    pytest.param({"events": {}}, id="events-not-a-list"),
    pytest.param([1, 2], id="not-an-object"),
]


@pytest.mark.parametrize("body", NON_PAGES)
def test_non_page_answer_is_retried_then_the_real_page_counts(
    requests_mock, make_client, fake_time, body
):
    requests_mock.get(START_URL, [{"json": body}, {"json": page([event(1500, 1)])}])
    records, report = read_all(make_client())
    assert identities(records) == [(LOG, 1500, "1")]
    assert fake_time.sleeps == [0.5]  # one backoff, as for a server error
    assert report.pages == 1


@pytest.mark.parametrize("body", NON_PAGES)
def test_non_page_answer_on_a_poll_fails_loudly_naming_log_window_and_path(
    requests_mock, make_client, body
):
    requests_mock.get(START_URL, status_code=202, json=running(f"{BASE}/query/q1"))
    requests_mock.get(f"{BASE}/query/q1", json=body)
    with pytest.raises(FatalAPIError) as info:
        read_all(make_client())
    text = str(info.value)
    assert "poll failed after 4 attempts" in text
    assert "log_id=log-a" in text
    assert "window=[999,2000)" in text
    assert "path=/query/q1" in text
    assert requests_mock.call_count == 1 + 4


def test_non_page_answer_on_next_is_retried_and_never_ends_the_window(requests_mock, make_client):
    requests_mock.get(START_URL, json=page([event(1001, 1)], f"{BASE}/query/n"))
    requests_mock.get(f"{BASE}/query/n", [{"json": {}}, {"json": page([event(1002, 2)])}])
    records, _ = read_all(make_client())
    assert identities(records) == [(LOG, 1001, "1"), (LOG, 1002, "2")]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("just text", "event 1 of page 1 (at /query/logs/log-a) is a str, not an object"),
        ({"sequence_number": 5, "log_id": LOG}, "has no integer timestamp (None)"),
        ({"timestamp": "1500", "sequence_number": 5}, "has no integer timestamp ('1500')"),
        ({"timestamp": 1500, "log_id": LOG}, "has no usable sequence_number"),
        ({"timestamp": 1500, "sequence_number_str": "x1"}, "has no usable sequence_number"),
        ({"timestamp": 1500, "sequence_number": 5, "log_id": "other"}, "belongs to log 'other'"),
    ],
)
def test_malformed_event_is_a_clear_error(requests_mock, make_client, bad, problem):
    requests_mock.get(START_URL, json=page([event(1400, 1), bad]))
    with pytest.raises(InvalidPageError) as info:
        read_all(make_client())
    assert problem in str(info.value)
    assert "for log 'log-a' window [1000, 2000)" in str(info.value)


@pytest.mark.parametrize("where", ["poll", "next"])
def test_400_on_a_continuation_restarts_from_the_cursor(requests_mock, make_client, where, caplog):
    refused = {"status_code": 400, "json": {"errorCode": 101, "message": "invalid continuation"}}
    if where == "poll":
        requests_mock.get(
            START_URL,
            [
                {"status_code": 202, "json": running(f"{BASE}/query/q1")},
                {"json": page([event(1001, 1), event(1002, 2)])},
            ],
        )
        requests_mock.get(f"{BASE}/query/q1", **refused)
    else:
        requests_mock.get(
            START_URL,
            [
                {"json": page([event(1001, 1)], f"{BASE}/query/n")},
                {"json": page([event(1001, 1), event(1002, 2)])},
            ],
        )
        requests_mock.get(f"{BASE}/query/n", **refused)
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        records, report = read_all(make_client())
    assert identities(records) == [(LOG, 1001, "1"), (LOG, 1002, "2")]
    assert report.restarts == 1
    assert any("invalid continuation" in m for m in caplog.messages)


def test_beyond_retention_is_a_warning_naming_the_window(requests_mock, make_client, caplog):
    requests_mock.get(
        START_URL,
        json=page([]),
        headers={
            "x-beyond-retention": "true",
            "x-beyond-retention-message": "Query range is beyond the retention period",
        },
    )
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        records, report = read_all(make_client())
    assert records == []
    assert report.beyond_retention
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("logsearch_beyond_retention log_id=log-a")
    assert "window_from=1000 window_to=2000" in warnings[0].getMessage()
    assert "beyond the retention period" in warnings[0].getMessage()
    complete = [m for m in caplog.messages if m.startswith("logsearch_window_complete")]
    assert "beyond_retention=true" in complete[0]


def test_event_time_comes_from_the_message_and_gaps_are_counted(requests_mock, make_client, caplog):
    messages = [
        '{"timestamp":"2026-11-26T07:08:41.250Z","user":"alice"}',
        '{"EventID":4624,"timeGenerated":"2026-11-26T07:08:40.5000000Z"}',
        "<134>2026-11-26T07:08:39.125Z host-1 sshd[7]: Accepted publickey",
        '{"user":"bob"}',
        '{"timestamp":"yesterday"}',
    ]
    events = [event(1001 + i, i, message=m) for i, m in enumerate(messages)]
    requests_mock.get(START_URL, json=page(events))
    client = make_client(
        per_page=10, event_time_fields=["timestamp", "timeGenerated", r"re:^<\d+>(\S+)"]
    )
    with caplog.at_level(logging.INFO, logger="tap_rapid7.logsearch"):
        records, report = read_all(client)
    assert [r["event_time"] for r in records] == [
        "2026-11-26T07:08:41.250+00:00",
        "2026-11-26T07:08:40.500+00:00",
        "2026-11-26T07:08:39.125+00:00",
        None,
        None,
    ]
    assert records[0]["received_at"] == "1970-01-01T00:00:01.001+00:00"
    assert (report.event_time_missing, report.event_time_unparsable) == (1, 1)
    complete = next(m for m in caplog.messages if m.startswith("logsearch_window_complete"))
    assert "event_time_missing=1 event_time_unparsable=1" in complete


def test_bad_event_time_fields_setting_is_refused_naming_it(make_client):
    with pytest.raises(FatalAPIError, match="event_time_fields"):
        make_client(event_time_fields=["re:(unclosed"])


def test_429_on_a_poll_waits_when_the_link_survives_the_wait(requests_mock, make_client, fake_time):
    # Retry-After 3 s < the 20 s link lifetime: wait and poll the same link again (no restart).
    requests_mock.get(START_URL, status_code=202, json=running(f"{BASE}/query/q1"))
    requests_mock.get(
        f"{BASE}/query/q1",
        [
            {
                "status_code": 429,
                "headers": {"Retry-After": "3"},
                "text": "API rate limit exceeded",
            },
            {"json": page([event(1001, 1)])},
        ],
    )
    client = make_client()
    records, report = read_all(client)
    assert identities(records) == [(LOG, 1001, "1")]
    assert report.restarts == 0
    assert 3.0 in fake_time.sleeps
    assert requests_mock.call_count == 3  # start, the 429'd poll, the poll again
    assert client.pacer.snapshot()["poll_rate_limited"] == 1


def test_429_on_a_poll_that_would_outlive_the_link_restarts_at_once(
    requests_mock, make_client, fake_time, caplog
):
    # Retry-After 30 s >= the 20 s link lifetime: the link is lost either way; restart now.
    starts = {"n": 0}

    def start(request, context):
        starts["n"] += 1
        if starts["n"] == 1:
            context.status_code = 202
            return running(f"{BASE}/query/q1")
        return page([event(1001, 1)])

    requests_mock.get(START_URL, json=start)
    requests_mock.get(
        f"{BASE}/query/q1",
        status_code=429,
        headers={"Retry-After": "30"},
        text="API rate limit exceeded",
    )
    with caplog.at_level(logging.WARNING, logger="tap_rapid7.logsearch"):
        records, report = read_all(make_client())
    assert identities(records) == [(LOG, 1001, "1")]
    assert report.restarts == 1
    assert starts["n"] == 2
    assert any("rate limited while polling" in m for m in caplog.messages)
    # the poll's 30 s hold does not delay the restart (a query, another budget family)
    assert 30.0 not in fake_time.sleeps


def test_surrounding_whitespace_of_the_key_is_stripped(requests_mock, make_client):
    # A key read from a secret file ends in a newline; requests would refuse the header with a
    # message quoting the key. The key is sent stripped.
    requests_mock.get(START_URL, json=page([event(1001, 1)]))
    read_all(make_client(api_key=f"  {API_KEY}\n"))
    assert requests_mock.request_history[0].headers["X-Api-Key"] == API_KEY
