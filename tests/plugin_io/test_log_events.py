"""The shared one-line event format."""

import logging

from plugin_io.log_events import format_event, log_event, parse_fields, redact


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


def test_parse_fields_reads_back_exactly_what_format_event_wrote():
    """Every value type round trips, including strings that look like other types."""
    import random

    rng = random.Random(11)
    atoms = ["50", "1.5", "true", "null", "None", "a-1", "x y", "a,b", "", "[x]", "ü", "=", '"q"']
    values: list = [None, True, False, 0, -7, 2.5, 1e-9, *atoms, ["Next", "Self"], ["1", "2"]]
    values += [["one"], [], [1, 2], {"k": [1, "2"]}, ["a", "b,c"], ["true", "x"]]
    for _ in range(300):
        fields = {f"k{i}": rng.choice(values) for i in range(rng.randint(1, 6))}
        line = format_event("flush_complete", fields)
        assert line.split(" ", 1)[0] == "flush_complete"
        assert parse_fields(line.split(" ", 1)[1]) == fields, line


def test_strings_that_look_like_numbers_are_quoted():
    assert format_event("e", {"progress": "50", "n": 50}) == 'e progress="50" n=50'


def test_every_event_the_code_logs_is_in_the_catalogue():
    """docs/log-events.md lists each event name the shipped packages pass to ``log_event``."""
    import re

    from tests.distribution_sources import REPO, top_level_packages

    catalogue = (REPO / "docs" / "log-events.md").read_text(encoding="utf-8")
    call = re.compile(r'log_event\(\s*[^,()]+,\s*[^,()]+,\s*"([a-z][a-z_]+)"')
    logged = {
        (name, str(path.relative_to(REPO)))
        for package in top_level_packages()
        for path in (REPO / package).rglob("*.py")
        for name in call.findall(path.read_text(encoding="utf-8"))
    }
    assert len(logged) > 25  # the pattern still finds the calls
    assert sorted(entry for entry in logged if f"`{entry[0]}`" not in catalogue) == []
