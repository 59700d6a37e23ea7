"""The event's own time read from inside Log Search messages (``event_time_fields``)."""

from __future__ import annotations

import datetime as dt
import json
import random
import re

import pytest

from tap_rapid7.logsearch.event_time import (
    EPOCH_MICROSECONDS_BELOW,
    EPOCH_MILLISECONDS_BELOW,
    EPOCH_SECONDS_BELOW,
    EventTimeExtractor,
    to_millis,
)

UTC = dt.UTC
ISO_OUT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
SYSLOG = r"re:^(?:<\d+>)?(\S+)"

WINDOWS_EVENT = json.dumps(
    {
        "EventID": 4624,
        "timeGenerated": "2026-11-26T07:08:41.2500000Z",
        "Computer": "dc01",
        "Channel": "Security",
        "EventData": {"TargetUserName": "alice", "LogonType": 3, "IpAddress": "10.0.0.15"},
        "Message": "An account was successfully logged on.\r\n\r\nSubject:\r\n\tSecurity ID:\t-",
    }
)
NESTED_EVENT = json.dumps(
    {
        "Event": {
            "System": {
                "Provider": {"Name": "Microsoft-Windows-Security-Auditing"},
                "EventID": 4625,
                "TimeCreated": {"SystemTime": "2026-11-26T07:08:41.123456700Z"},
                "Computer": "dc01.corp.example.com",
            },
            "EventData": {"Data": [{"Name": "TargetUserName", "#text": "bob"}]},
        }
    }
)
IDR_EVENT = (
    '{"timestamp":"2026-11-26T07:08:41.250Z","event_type":"PROCESS_START",'
    '"process":{"name":"powershell.exe","cmd_line":"powershell -enc SQBFAFgA"},"user":"alice"}'
)
JAVA_STACK = (
    "2026-11-26 07:08:41,250 ERROR [worker-3] Request failed for alice\n"
    "java.lang.IllegalStateException: connection pool exhausted\n"
    "\tat com.example.pool.Pool.borrow(Pool.java:88)\n"
    "\tat com.example.api.Handler.handle(Handler.java:41)\n"
    "Caused by: java.util.concurrent.TimeoutException: 2026-11-26 07:09:00,000\n"
    "\t... 12 more"
)


def utc(*parts: int, micro: int = 0) -> str:
    """The expected output, written by the standard library (not by the code under test)."""
    return dt.datetime(*parts, micro, tzinfo=UTC).isoformat(timespec="milliseconds")


def extract(fields: list[str], message: str | None) -> str | None:
    return EventTimeExtractor(fields).extract(message)


# --- Real-looking messages -----------------------------------------------------------------------


def test_windows_event_with_seven_fractional_digits():
    assert extract(["timeGenerated"], WINDOWS_EVENT) == utc(2026, 11, 26, 7, 8, 41, micro=250_000)


def test_nested_windows_xml_as_json_path():
    fields = ["Event.System.TimeCreated.SystemTime"]
    # 123456700 ns: truncated, not rounded, to the millisecond.
    assert extract(fields, NESTED_EVENT) == utc(2026, 11, 26, 7, 8, 41, micro=123_000)
    # The path stops at an object: found, but an object is not a time.
    extractor = EventTimeExtractor(["Event.System.TimeCreated"])
    assert extractor.extract(NESTED_EVENT) is None
    assert extractor.reset_counts() == (0, 1)


def test_idr_json_timestamp():
    assert extract(["timestamp"], IDR_EVENT) == "2026-11-26T07:08:41.250+00:00"


def test_epoch_milliseconds_json_number():
    assert extract(["time"], '{"time":1795680521250,"host":"web-1"}') == utc(
        2026, 11, 26, 8, 8, 41, micro=250_000
    )


def test_epoch_seconds_json_float_is_exact():
    assert extract(["ts"], '{"ts":1795680521.25}') == utc(2026, 11, 26, 8, 8, 41, micro=250_000)
    # 1605102271.671 is 1605102271.67099988... as a double: still 671 ms, not 670.
    assert extract(["ts"], '{"ts":1605102271.671}') == utc(2020, 11, 11, 13, 44, 31, micro=671_000)
    assert extract(["ts"], '{"ts":1.7956805212505e9}') == utc(2026, 11, 26, 8, 8, 41, micro=250_000)


def test_epoch_numbers_in_strings():
    expected = utc(2026, 11, 26, 8, 8, 41, micro=250_000)
    assert extract(["t"], '{"t":"1795680521.25"}') == expected
    assert extract(["t"], '{"t":"1795680521250"}') == expected
    assert extract(["t"], '{"t":"1795680521250999"}') == expected  # microseconds, floored
    assert extract(["t"], '{"t":" 1795680521 "}') == utc(2026, 11, 26, 8, 8, 41)
    assert extract(["t"], '{"t":1795680521250999}') == expected
    assert extract(["t"], '{"t":"-1.5"}') == utc(1969, 12, 31, 23, 59, 58, micro=500_000)


def test_epoch_unit_thresholds_by_magnitude():
    assert (EPOCH_SECONDS_BELOW, EPOCH_MILLISECONDS_BELOW, EPOCH_MICROSECONDS_BELOW) == (
        10**11,
        10**14,
        10**17,
    )
    # Just below 1e11 is seconds (the year 5138); 1e11 itself is milliseconds (1973).
    assert to_millis(10**11 - 1) == (10**11 - 1) * 1000
    assert to_millis(10**11) == 10**11
    assert to_millis(10**14 - 1) == 10**14 - 1
    assert to_millis(10**14) == 10**11  # microseconds
    assert to_millis(10**17 - 1) == 10**14 - 1
    assert to_millis(10**17) is None  # nanoseconds are not guessed
    assert to_millis(-(10**11)) == -(10**11)  # 1966 in milliseconds
    assert to_millis(0) == 0


def test_microsoft_json_dates():
    expected = utc(2020, 11, 11, 13, 44, 31, micro=671_000)
    assert extract(["d"], '{"d":"/Date(1605102271671)/"}') == expected
    assert extract(["d"], '{"d":"/Date(1605102271671+0000)/"}') == expected
    assert extract(["d"], '{"d":"/Date(1605102271671-0500)/"}') == expected  # offset is display
    assert extract(["d"], '{"d":"\\/Date(1605102271671)\\/"}') == expected  # JSON-escaped slash
    assert extract([r're:"d":"(\\/Date\(\d+\)\\/)"'], '{"d":"\\/Date(1605102271671)\\/"}') == (
        expected
    )
    assert extract(["d"], '{"d":"/Date(-1000)/"}') == utc(1969, 12, 31, 23, 59, 59)
    for junk in ("/Date()/", "/Date(12ab)/", "/Date(1605102271671+00)/", "Date(1)", "/Date(1"):
        assert extract(["d"], json.dumps({"d": junk})) is None, junk


def test_syslog_text_through_a_regex():
    line = "<134>2026-11-26T07:08:43.123Z host-12 sshd[1234]: Accepted publickey for bob"
    assert extract([SYSLOG], line) == utc(2026, 11, 26, 7, 8, 43, micro=123_000)
    # The named group "time" is used even when it is not group 1.
    named = r"re:^<\d+>(?P<host>\S+) (?P<time>\S+)"
    assert extract([named], "<14>fw01 2026-11-26T08:08:43+01:00 dropped") == utc(
        2026, 11, 26, 7, 8, 43
    )


def test_multi_line_java_stack_takes_the_first_line():
    fields = [r"re:^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"]
    assert extract(fields, JAVA_STACK) == utc(2026, 11, 26, 7, 8, 41, micro=250_000)
    # Without the anchor the first match is still the first line, never the "Caused by" time.
    assert extract([r"re:(\d{4}-\S+ \S+)"], JAVA_STACK) == utc(
        2026, 11, 26, 7, 8, 41, micro=250_000
    )


def test_regex_on_a_json_message():
    assert extract([r're:"timestamp":"([^"]+)"'], IDR_EVENT) == "2026-11-26T07:08:41.250+00:00"


# --- Malformed, missing, unparsable ----------------------------------------------------------


def test_malformed_json_is_salvaged_for_plain_keys():
    broken = '{"timestamp":"2026-11-26T07:08:41.250Z", "args":[,,]'
    extractor = EventTimeExtractor(["timestamp"])
    assert extractor.extract(broken) == "2026-11-26T07:08:41.250+00:00"
    # The key first appears as a value; the real key (with spaces around the colon) comes later.
    tricky = '{"field":"time", "time" :  1795680521250, "x":[1,,2]'
    assert extract(["time"], tricky) == utc(2026, 11, 26, 8, 8, 41, micro=250_000)
    # Number that msgspec refuses (out of range) makes the message malformed; found, unparsable.
    huge = EventTimeExtractor(["time"])
    assert huge.extract('{"time": 1e400}') is None
    assert huge.reset_counts() == (0, 1)
    # Paths are not salvaged: nesting cannot be trusted in broken text.
    nested = EventTimeExtractor(["a.time"])
    assert nested.extract('{"a":{"time":"2026-11-26T07:08:41Z"}, [') is None
    assert nested.reset_counts() == (1, 0)


def test_non_json_text_with_json_keys_only_is_missing():
    extractor = EventTimeExtractor(["timestamp", "timeGenerated"])
    assert extractor.extract(JAVA_STACK) is None
    assert extractor.extract("<134>Nov 26 07:08:43 host sshd[1]: timestamp=2026-11-26") is None
    assert extractor.extract('["timestamp", "2026-11-26T07:08:41Z"]') is None  # not an object
    assert extractor.extract(None) is None
    assert extractor.extract('{"other":1}') is None
    assert extractor.extract('{"timestamp":null,"timeGenerated":""}') is None  # null, "" = absent
    assert (extractor.missing, extractor.unparsable) == (6, 0)


def test_unparsable_values_are_counted_not_raised():
    extractor = EventTimeExtractor(["timestamp"])
    for value in (
        "yesterday",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",  # 10000-01-01 in UTC
        "2026-11-26T24:00:00Z",
        "2026-13-01",
        "NaN",
        "inf",
        "-Infinity",
        "1e12",
        "  ",
        True,
        False,
        [1795680521250],
        {"SystemTime": "2026-11-26T07:08:41Z"},
        10**17,
        -(10**17),
        -62_135_596_801,  # one second before 0001-01-01 in epoch seconds
    ):
        message = json.dumps({"timestamp": value})
        assert extractor.extract(message) is None, message
    assert extractor.reset_counts() == (0, 18)
    assert extractor.reset_counts() == (0, 0)  # reset zeroes


def test_to_millis_rejects_non_finite_and_non_times():
    assert to_millis(float("nan")) is None
    assert to_millis(float("inf")) is None
    assert to_millis(True) is None
    assert to_millis(None) is None
    assert to_millis(b"2026-11-26") is None
    assert to_millis("2004-03-15T07:55:47.472Z") == 1_079_337_347_472


def test_year_range_edges():
    top = "9999-12-31T23:59:59.999Z"
    assert extract(["t"], json.dumps({"t": top})) == "9999-12-31T23:59:59.999+00:00"
    assert extract(["t"], json.dumps({"t": "1000-01-01T00:00:00Z"})) == utc(1000, 1, 1, 0, 0, 0)
    # Years below 1000 come out only when they can be written with 4 digits (see the module).
    low = extract(["t"], json.dumps({"t": "0001-01-01T00:00:00Z"}))
    assert low in (None, "0001-01-01T00:00:00.000+00:00")
    assert extract(["t"], json.dumps({"t": "0001-01-01T00:30:00+01:00"})) is None  # year 0


# --- Configuration: order, paths, validation, disabled ----------------------------------------


def test_first_field_that_parses_wins():
    message = json.dumps(
        {"a": "2026-11-26T07:00:00Z", "b": "2026-11-26T08:00:00Z", "c": "not a time"}
    )
    assert extract(["a", "b"], message) == utc(2026, 11, 26, 7, 0, 0)
    assert extract(["b", "a"], message) == utc(2026, 11, 26, 8, 0, 0)
    # An unparsable first value falls through; a missing one too.
    extractor = EventTimeExtractor(["c", "zz", "b", "a"])
    assert extractor.extract(message) == utc(2026, 11, 26, 8, 0, 0)
    assert extractor.reset_counts() == (0, 0)
    # A regex first, then a key.
    assert extract([SYSLOG, "b"], message) == utc(2026, 11, 26, 8, 0, 0)


def test_dotted_key_is_literal_first_then_a_path():
    both = '{"data.time":"2026-11-26T07:00:00Z","data":{"time":"2026-11-26T08:00:00Z"}}'
    assert extract(["data.time"], both) == utc(2026, 11, 26, 7, 0, 0)
    assert extract(["data.time"], '{"data":{"time":1795680521}}') == utc(2026, 11, 26, 8, 8, 41)
    junk_literal = '{"data.time":"junk","data":{"time":"2026-11-26T08:00:00Z"}}'
    assert extract(["data.time"], junk_literal) == utc(2026, 11, 26, 8, 0, 0)
    extractor = EventTimeExtractor(["data.time"])
    assert extractor.extract('{"data":"2026-11-26T08:00:00Z"}') is None
    assert extractor.extract('{"data":{"other":1}}') is None
    assert extractor.extract('{"data":[{"time":"2026-11-26T08:00:00Z"}]}') is None
    assert extractor.reset_counts() == (3, 0)


def test_a_key_and_a_path_below_it_share_one_decode():
    # "Event" is kept whole (an object, unparsable); the path below it is walked as plain dicts.
    extractor = EventTimeExtractor(["Event", "Event.System.TimeCreated.SystemTime", "Event.x"])
    assert extractor.extract(NESTED_EVENT) == utc(2026, 11, 26, 7, 8, 41, micro=123_000)
    assert extractor.extract('{"Event":"2026-11-26T09:00:00Z"}') == utc(2026, 11, 26, 9, 0, 0)
    assert extractor.extract('{"Event":{"x":1795680521}}') == utc(2026, 11, 26, 8, 8, 41)
    assert extractor.reset_counts() == (0, 0)


def test_unusual_keys_and_whitespace():
    message = '\n  {"@timestamp":"2026-11-26T07:00:00Z","we\\"ird":"2026-11-26T08:00:00+0100"}'
    assert extract(["@timestamp"], message) == utc(2026, 11, 26, 7, 0, 0)
    assert extract(['we"ird'], message) == utc(2026, 11, 26, 7, 0, 0)
    assert extract(['we"ird'], message + ", [") == utc(2026, 11, 26, 7, 0, 0)  # salvaged


@pytest.mark.parametrize(
    ("fields", "entry_text"),
    [
        ([""], "entry 1 ('')"),
        (["timestamp", "   "], "entry 2 ('   ')"),
        (["re:("], "entry 1 ('re:(')"),
        ([r"re:\d{4}-\d\d"], "has no group"),
        (["re:"], "has no group"),
        (["timestamp", 5], "entry 2 (5)"),
        ("timestamp", "single string 'timestamp'"),
    ],
)
def test_invalid_entries_name_the_setting(fields, entry_text):
    with pytest.raises(ValueError, match="event_time_fields") as caught:
        EventTimeExtractor(fields)
    assert entry_text in str(caught.value)


def test_empty_setting_turns_the_feature_off():
    extractor = EventTimeExtractor([])
    assert extractor.enabled is False
    assert extractor.extract(IDR_EVENT) is None
    assert extractor.extract("garbage") is None
    assert extractor.reset_counts() == (0, 0)
    assert EventTimeExtractor(["timestamp"]).enabled is True


def test_counts_accumulate_until_reset():
    extractor = EventTimeExtractor(["timestamp"])
    results = [extractor.extract(m) for m in (IDR_EVENT, "text", '{"timestamp":"x"}', "text")]
    assert results == ["2026-11-26T07:08:41.250+00:00", None, None, None]
    assert (extractor.missing, extractor.unparsable) == (2, 1)
    assert extractor.reset_counts() == (2, 1)
    assert (extractor.missing, extractor.unparsable) == (0, 0)


# --- Exactness -----------------------------------------------------------------------------------


def test_offsets_convert_to_utc_to_the_millisecond():
    expected = utc(2026, 11, 26, 7, 8, 41, micro=472_000)
    for text in (
        "2026-11-26T07:08:41.472Z",
        "2026-11-26T07:08:41.472z",
        "2026-11-26T07:08:41.472+00:00",
        "2026-11-26T07:08:41.472-00:00",
        "2026-11-26T12:38:41.472+05:30",
        "2026-11-25T23:08:41.4729999-0800",
        "2026-11-26T08:08:41.472+01",
        "2026-11-26 08:08:41,472+01:00",
        "2026-11-26T07:08:41.472",  # no zone: UTC
        "2026-11-26t07:08:41.472Z",
    ):
        assert extract(["t"], json.dumps({"t": text})) == expected, text
    assert extract(["t"], '{"t":"2004-03-15T07:55:47.472Z"}') == "2004-03-15T07:55:47.472+00:00"
    assert extract(["t"], '{"t":"2026-11-26"}') == "2026-11-26T00:00:00.000+00:00"
    assert extract(["t"], '{"t":"2026-11-26T07:08Z"}') == "2026-11-26T07:08:00.000+00:00"


def test_random_milliseconds_round_trip_exactly():
    rng = random.Random(20261126)
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    low = int((dt.datetime(1000, 1, 2, tzinfo=UTC) - epoch).total_seconds()) * 1000
    high = int((dt.datetime(9999, 12, 30, tzinfo=UTC) - epoch).total_seconds()) * 1000
    extractor = EventTimeExtractor(["iso", "zulu", "win", "ms", "us", "s", "str_s"])
    checked = 0
    for _ in range(3000):
        millis = rng.randrange(low, high)
        moment = epoch + dt.timedelta(milliseconds=millis)
        expected = moment.isoformat(timespec="milliseconds")
        offset = dt.timezone(dt.timedelta(minutes=rng.randrange(-14 * 60, 14 * 60 + 1)))
        local = moment.astimezone(offset).isoformat(timespec="milliseconds")
        zulu = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # Windows writes 7 digits; the extra ones must be truncated, never rounded up.
        windows = zulu[:-1] + f"{rng.randrange(10_000):04d}Z"
        messages = [
            {"iso": local},
            {"zulu": zulu},
            {"win": windows},
            {"iso": local.replace("T", " ")},
        ]
        if 10**11 <= abs(millis) < 10**14:
            messages.append({"ms": millis})
            messages.append({"us": millis * 1000 + rng.randrange(1000)})
        if abs(millis) < 10**14:
            seconds = millis / 1000  # a double; its shortest repr is the 3-decimal literal
            messages.append({"s": seconds})
            sign, size = ("-" if millis < 0 else ""), abs(millis)
            messages.append({"str_s": f"{sign}{size // 1000}.{size % 1000:03d}"})
        for fields in messages:
            message = json.dumps(fields)
            assert extractor.extract(message) == expected, message
            checked += 1
    assert checked > 3000 * 4
    assert extractor.reset_counts() == (0, 0)


def test_garbage_never_raises_and_output_is_always_canonical():
    rng = random.Random(7)
    alphabet = '{}[]":,. -+0123456789TZtz/\\Date()e\n\x00é'
    extractor = EventTimeExtractor(["a", "a.b", SYSLOG])
    nones = 0
    for _ in range(3000):
        message = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        for candidate in (message, '{"a":"' + message + '"}', '{"a":' + message):
            result = extractor.extract(candidate)
            if result is None:
                nones += 1
            else:
                assert ISO_OUT.fullmatch(result), (candidate, result)
                dt.datetime.fromisoformat(result)
    assert extractor.missing + extractor.unparsable == nones
    assert nones > 0


# --- WMI CIM datetimes (offset in minutes) ---------------------------------------------------
# Shaped like the Windows events Rapid7 stores from WMI collectors: the time is a CIM datetime
# "yyyymmddHHMMSS.mmmmmmsUUU" inside source_json, where sUUU is the offset from UTC in MINUTES.


def wmi_event(time_generated: str) -> str:
    return json.dumps(
        {
            "sourceName": "Microsoft-Windows-Security-Auditing",
            "source_json": {
                "computerName": "WS-0042.corp.example.com",
                "eventCode": 4688,
                "sourceName": "Microsoft-Windows-Security-Auditing",
                "timeGenerated": time_generated,
                "timeWritten": time_generated,
                "eventData": {"NewProcessName": "C:\\Windows\\System32\\cmd.exe"},
            },
        }
    )


WMI_FIELDS = ["source_json.timeGenerated"]


@pytest.mark.parametrize(
    ("cim", "expected"),
    [
        # -000: UTC itself.
        ("20210401000023.939620-000", "2021-04-01T00:00:23.939+00:00"),
        ("20210401000023.939620+000", "2021-04-01T00:00:23.939+00:00"),
        # +060: 60 minutes ahead of UTC (not 60 hours, not +06:00): one hour earlier in UTC.
        ("20210401000023.939620+060", "2021-03-31T23:00:23.939+00:00"),
        # -300: five hours behind UTC (US Eastern standard time).
        ("20210401000023.939620-300", "2021-04-01T05:00:23.939+00:00"),
        # An offset that is not whole hours: +330 is India's +05:30.
        ("20210401053023.939620+330", "2021-04-01T00:00:23.939+00:00"),
        # Precision below the microsecond marked with *: the missing digits are zeros.
        ("20210401000023.939***-000", "2021-04-01T00:00:23.939+00:00"),
        ("20210401000023.******-000", "2021-04-01T00:00:23.000+00:00"),
    ],
)
def test_wmi_cim_datetime_offset_is_in_minutes(cim, expected):
    assert extract(WMI_FIELDS, wmi_event(cim)) == expected
    assert extract(["timeGenerated"], json.dumps({"timeGenerated": cim})) == expected
    # A CIM time carries its offset: event_time_zone does not change it.
    assert EventTimeExtractor(WMI_FIELDS, "Europe/Berlin").extract(wmi_event(cim)) == expected


def test_wmi_cim_through_a_regex_on_text():
    line = "WMI: timeGenerated=20210401000023.939620+060 eventCode=4688 host=WS-0042"
    assert extract([r"re:timeGenerated=(\S+)"], line) == "2021-03-31T23:00:23.939+00:00"


def test_wmi_cim_wildcards_and_junk_are_unparsable():
    extractor = EventTimeExtractor(WMI_FIELDS)
    for junk in (
        "********000023.939620-000",  # unknown date
        "20210401******.******-000",  # unknown time of day
        "2021040100002*.939620-000",
        "20210401000023.939620-***",  # unknown offset
        "20210401000023.9*9620-000",  # a wildcard before a digit
        "20211301000023.939620-000",  # month 13
        "20210401250023.939620-000",  # hour 25
        "20210401000023.939620+1440",  # 26 characters
        "20210401000023.939620:000",  # a CIM interval, not a time
        "00000000000000.000000+000",  # year 0
    ):
        assert extractor.extract(wmi_event(junk)) is None, junk
    assert extractor.reset_counts() == (0, 10)


# --- event_time_zone: the zone of times written without an offset ------------------------------
# Shaped like nginx/HTTP access events forwarded as JSON: "http.timestamp" is a flat key with a
# dot, the time has microseconds and no offset.


def http_event(timestamp: str) -> str:
    return json.dumps(
        {
            "http.timestamp": timestamp,
            "http.method": "GET",
            "http.url": "/api/v1/health",
            "http.status": 200,
            "source.ip": "10.1.2.3",
        }
    )


HTTP_FIELDS = ["http.timestamp"]


def test_zone_less_time_is_utc_by_default():
    expected = "2020-02-29T20:53:34.530+00:00"
    assert extract(HTTP_FIELDS, http_event("2020-02-29 20:53:34.530862")) == expected
    assert EventTimeExtractor(HTTP_FIELDS).zone == "UTC"
    extractor = EventTimeExtractor(HTTP_FIELDS, "UTC")
    assert extractor.extract(http_event("2020-02-29 20:53:34.530862")) == expected


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        # Winter: CET, UTC+1 (a leap day too).
        ("2020-02-29 20:53:34.530862", "2020-02-29T19:53:34.530+00:00"),
        ("2020-02-29T00:30:00", "2020-02-28T23:30:00.000+00:00"),
        # Summer: CEST, UTC+2.
        ("2020-07-01 20:53:34.530862", "2020-07-01T18:53:34.530+00:00"),
        # The last second of winter time and the first of summer time (2020-03-29, 02:00 -> 03:00).
        ("2020-03-29 01:59:59", "2020-03-29T00:59:59.000+00:00"),
        ("2020-03-29 03:00:00", "2020-03-29T01:00:00.000+00:00"),
        # A date alone is local midnight.
        ("2020-07-01", "2020-06-30T22:00:00.000+00:00"),
        # Nine fractional digits still work (truncated to the millisecond).
        ("2020-07-01 20:53:34.530862999", "2020-07-01T18:53:34.530+00:00"),
        ("2020-02-29T20:53:34.999999999", "2020-02-29T19:53:34.999+00:00"),
    ],
)
def test_zone_less_time_is_read_in_event_time_zone(local, expected):
    assert EventTimeExtractor(HTTP_FIELDS, "Europe/Berlin").extract(http_event(local)) == expected


def test_nine_fractional_digits_under_utc():
    assert extract(HTTP_FIELDS, http_event("2020-02-29 20:53:34.530862999")) == (
        "2020-02-29T20:53:34.530+00:00"
    )
    assert extract(["t"], '{"t":"2020-02-29T20:53:34.123456789Z"}') == (
        "2020-02-29T20:53:34.123+00:00"
    )


def test_skipped_and_repeated_local_hours_follow_fold_0():
    berlin = EventTimeExtractor(HTTP_FIELDS, "Europe/Berlin")
    # 2026-03-29 02:30 never happens in Berlin (02:00 -> 03:00): read with the offset before the
    # change (+01:00), i.e. the instant 03:30 summer time.
    assert berlin.extract(http_event("2026-03-29 02:30:00")) == "2026-03-29T01:30:00.000+00:00"
    # 2026-10-25 02:30 happens twice (03:00 -> 02:00): the first one, still summer time (+02:00).
    assert berlin.extract(http_event("2026-10-25 02:30:00")) == "2026-10-25T00:30:00.000+00:00"
    assert berlin.extract(http_event("2026-10-25 03:30:00")) == "2026-10-25T02:30:00.000+00:00"


def test_event_time_zone_leaves_offsets_and_epoch_numbers_alone():
    eastern = EventTimeExtractor(["t"], "America/New_York")
    assert eastern.extract('{"t":"2020-02-29T20:53:34.530Z"}') == "2020-02-29T20:53:34.530+00:00"
    assert eastern.extract('{"t":"2020-02-29T21:53:34.530+01:00"}') == (
        "2020-02-29T20:53:34.530+00:00"
    )
    assert eastern.extract('{"t":1583009614530}') == "2020-02-29T20:53:34.530+00:00"
    assert eastern.extract('{"t":"1583009614.53"}') == "2020-02-29T20:53:34.530+00:00"
    assert eastern.extract('{"t":"/Date(1583009614530)/"}') == "2020-02-29T20:53:34.530+00:00"
    # A zone-less time in New York (EST, UTC-5), also when found by a regex in a text line.
    assert eastern.extract('{"t":"2020-02-29 15:53:34.530"}') == "2020-02-29T20:53:34.530+00:00"
    java = EventTimeExtractor([r"re:^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"], "America/New_York")
    assert java.extract(JAVA_STACK) == utc(2026, 11, 26, 12, 8, 41, micro=250_000)


def test_event_time_zone_at_the_year_range_edges():
    # 0001-01-01 00:30 in Berlin (local mean time, +00:53:28) is in the year 0 in UTC.
    assert EventTimeExtractor(["t"], "Europe/Berlin").extract('{"t":"0001-01-01T00:30:00"}') is None
    new_york = EventTimeExtractor(["t"], "America/New_York")
    assert new_york.extract('{"t":"9999-12-31T23:59:59"}') is None  # 10000-01-01 in UTC
    assert new_york.extract('{"t":"9999-12-31T12:00:00"}') == "9999-12-31T17:00:00.000+00:00"
    assert new_york.reset_counts() == (0, 1)


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus_Mons", "Europe", "utc", "Europe/Berlin ", "", "../etc/passwd", "/etc/UTC", 5],
)
def test_an_unknown_event_time_zone_is_refused_naming_the_setting(name):
    with pytest.raises(ValueError, match="event_time_zone") as caught:
        EventTimeExtractor(HTTP_FIELDS, name)
    assert "\n" not in str(caught.value)
    # Refused even when event_time_fields is empty (the feature off): a typo never waits.
    with pytest.raises(ValueError, match="event_time_zone"):
        EventTimeExtractor([], name)


def test_an_unknown_event_time_zone_stops_the_client_at_start(make_client):
    from singer_sdk.exceptions import FatalAPIError

    with pytest.raises(FatalAPIError, match="event_time_zone 'Europe/Berln' is not a known"):
        make_client(event_time_fields=["timestamp"], event_time_zone="Europe/Berln")
    client = make_client(event_time_fields=["http.timestamp"], event_time_zone="Europe/Berlin")
    builder = client.reader._record_builder()
    record = builder({"message": http_event("2020-07-01 20:53:34.530862")}, "log-a", 1, 1, "1")
    assert record["event_time"] == "2020-07-01T18:53:34.530+00:00"


def test_the_setting_defaults_to_utc():
    from tap_rapid7.settings import CONFIG_SCHEMA, TapSettings, config_from_env

    assert TapSettings(api_key="k").event_time_zone == "UTC"
    assert CONFIG_SCHEMA["properties"]["event_time_zone"]["default"] == "UTC"
    assert config_from_env({"TAP_RAPID7_EVENT_TIME_ZONE": "Europe/Berlin"}) == {
        "event_time_zone": "Europe/Berlin"
    }
