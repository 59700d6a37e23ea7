"""What ``kvp_info: true`` costs the tap: records/s and bytes, on vs off, on the same events.

In-process, no HTTP: the same synthetic events are served as two sets of page bodies (JSON
bytes), shaped like Rapid7's OpenAPI example (``EventsResponseSimple``): without ``kvp_info``
(what the API sends when it is off) and with it (one ``{key, value}`` span pair per field of
the JSON message, numbers as numbers, one pair in 20 with ``value`` nested inside ``key`` as in
the example's second event). Each run decodes the pages as the tap does (msgspec), builds every
record with the tap's ``RecordBuilder`` (kvp off vs on) and encodes it as a RECORD line; both
runs are checked (every event made a record; on, every record has its pairs).

Printed: records per CPU second of each, bytes per event on the wire (page bodies) and in the
RECORD lines, the cost per event in microseconds, and two ratios without a goal (they are what
the runbook quotes for a user deciding whether to turn it on): ``kvp_on_over_off_records_per_s``
(decoding pages 2.4 times as large is most of it: twelve span objects per event) and
``kvp_on_over_off_record_bytes`` (what the column adds to the target's input).

Run: ``.venv/bin/python benchmarks/kvp_cost.py [--quick] [--events N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import benchlib
import msgspec

from tap_rapid7.logsearch.http import decode_json
from tap_rapid7.logsearch.records import KVP, RecordBuilder

PER_PAGE = 500
LOG_ID = benchlib.LOG_IDS[0]
_encode = msgspec.json.Encoder().encode


def span(text: Any, start: int) -> dict[str, Any]:
    return {"text": text, "start": start, "end": start + len(str(text))}


def make_event(index: int, *, kvp_info: bool) -> dict[str, Any]:
    """Event number ``index``: a JSON message of six fields, as Rapid7 pages carry it."""
    fields: dict[str, Any] = {
        "user": f"user{index % 977}@corp",
        "source_ip": f"10.{index % 256}.{index // 256 % 256}.{index % 7 + 1}",
        "action": "LOGIN",
        "result": "SUCCESS" if index % 11 else "FAILED",
        "bytes": index * 13 % 100_000,
        "host": f"host-{index % 131:03d}",
    }
    message = _encode(fields).decode()
    millis = benchlib.BASE_MILLIS + index // 3 * 7
    sequence = benchlib.BASE_SEQUENCE + index * 4096
    event: dict[str, Any] = {
        "timestamp": millis,
        "sequence_number": sequence,
        "sequence_number_str": str(sequence),
        "log_id": LOG_ID,
        "message": message,
        "labels": [],
        "links": [{"rel": "Context", "href": f"https://us.rest.logs.insight.rapid7.com/query/context/{sequence}"}],
    }  # fmt: skip
    if kvp_info:
        pairs = []
        for position, (key, value) in enumerate(fields.items()):
            start = message.find(f'"{key}"')
            key_span = span(f"json.{key}", start + 1)
            value_span = span(value, start + len(key) + 3)
            if index % 20 == 0 and position == 0:  # the example's malformed-looking variant
                pairs.append({"key": {**key_span, "value": value_span}})
            else:
                pairs.append({"key": key_span, "value": value_span})
        event["kvp_info"] = pairs
    return event


def make_pages(events: int, *, kvp_info: bool) -> list[bytes]:
    """Page bodies of ``PER_PAGE`` events each, as the API would send them."""
    pages = []
    for first in range(0, events, PER_PAGE):
        chunk = [
            make_event(i, kvp_info=kvp_info) for i in range(first, min(events, first + PER_PAGE))
        ]
        pages.append(_encode({"logs": [LOG_ID], "events": chunk}))
    return pages


def run(pages: list[bytes], *, kvp_info: bool) -> tuple[float, int, int]:
    """(CPU seconds, records, bytes of RECORD lines): decode, build, encode every event."""
    build = RecordBuilder(kvp_info=kvp_info)
    records = line_bytes = 0
    started = time.process_time()
    for body in pages:
        for event in decode_json(body)["events"]:
            seq = event["sequence_number"]
            record = build(event, LOG_ID, event["timestamp"], seq, event["sequence_number_str"])
            line = _encode({"type": "RECORD", "stream": benchlib.STREAM, "record": record})
            line_bytes += len(line) + 1
            records += 1
            if kvp_info and len(record[KVP]) != 6:
                msg = f"record {records} has {len(record[KVP])} kvp pairs, not 6"
                raise SystemExit(msg)
    return time.process_time() - started, records, line_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 events, 1 run (smoke test)")
    parser.add_argument("--events", type=int, help="events per run (100,000)")
    parser.add_argument("--repeat", type=int, help="runs of each, best counts (3; quick: 1)")
    args = parser.parse_args()
    events = args.events or (3_000 if args.quick else 100_000)
    repeat = args.repeat or (1 if args.quick else 3)
    benchlib.print_header("kvp_cost", {"events": events, "repeat": repeat, "per_page": PER_PAGE})
    pages = {flag: make_pages(events, kvp_info=flag) for flag in (False, True)}
    best: dict[bool, tuple[float, int, int]] = {}
    for _ in range(repeat):
        for flag in (False, True):  # alternating: both see the same machine load
            result = run(pages[flag], kvp_info=flag)
            if result[1] != events:
                msg = f"kvp_info={flag}: {result[1]} records from {events} events"
                raise SystemExit(msg)
            if flag not in best or result[0] < best[flag][0]:
                best[flag] = result
    rates = {}
    for flag, (cpu, records, line_bytes) in best.items():
        wire = sum(len(body) for body in pages[flag])
        rates[flag] = benchlib.rate(records, cpu)
        print(
            f"kvp_{'on' if flag else 'off'}: records={records} cpu_s={cpu:.3f} "
            f"records_per_cpu_s={rates[flag]:.0f} page_bytes_per_event={wire / records:.0f} "
            f"record_bytes_per_event={line_bytes / records:.0f}",
            flush=True,
        )
    off_us = 1e6 / rates[False]
    on_us = 1e6 / rates[True]
    print(f"context: kvp cost per event={on_us - off_us:.2f} us ({off_us:.2f} -> {on_us:.2f})")
    ratio = rates[True] / rates[False]
    benchlib.print_ratio("kvp_on_over_off_records_per_s", ratio, "none", True)
    size_ratio = best[True][2] / best[False][2]
    benchlib.print_ratio("kvp_on_over_off_record_bytes", size_ratio, "none", True)


if __name__ == "__main__":
    main()
