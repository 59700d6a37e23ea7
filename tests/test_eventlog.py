"""The shared one-line event format."""

import logging

from singer_eventlog import format_event, log_event, redact


def test_format_event_orders_fields_and_quotes_only_when_needed():
    line = format_event(
        "logsearch_page_complete",
        {"log_id": "a-1", "page": 3, "window": "2024-01-01 00:00", "keys": ["Next", "Self"]},
    )
    assert line == (
        'logsearch_page_complete log_id=a-1 page=3 window="2024-01-01 00:00" keys=Next,Self'
    )


def test_log_event_attaches_fields_as_extra_even_reserved_names(caplog):
    logger = logging.getLogger("test.eventlog")
    with caplog.at_level(logging.INFO, logger="test.eventlog"):
        log_event(logger, logging.INFO, "flush_complete", stream="events", name="x", rows=2)
    record = caplog.records[-1]
    assert record.getMessage() == "flush_complete stream=events name=x rows=2"
    assert record.event_name == "flush_complete"
    assert record.rows == 2
    assert record.field_name == "x"


def test_log_event_skips_disabled_levels(caplog):
    logger = logging.getLogger("test.eventlog.quiet")
    with caplog.at_level(logging.INFO, logger="test.eventlog.quiet"):
        log_event(logger, logging.DEBUG, "logsearch_poll", progress=50)
    assert caplog.records == []


def test_redact_replaces_every_secret_occurrence():
    assert redact("key=abc and abc", ["abc", None, ""]) == "key=[REDACTED] and [REDACTED]"
