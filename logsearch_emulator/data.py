"""Deterministic synthetic logs, log sets and events, generated lazily per time bucket.

Events of one log are generated one minute ("bucket") at a time from a RNG seeded by
(seed, log, bucket), so any window from the epoch to now costs only the buckets it touches and
start-up is instant. A LRU bounded by the number of cached events (about 1.1 KB each, message
plus pre-rendered JSON) keeps recently used buckets.

An entry's identity is (log_id, timestamp, sequence_number): Rapid7 documents the sequence
number only as "a unique identifier used to distinguish between log entries received in the
same millisecond". Two shapes (option `sequence_shape`) times two layouts (option
`sequence_numbers`):

    shape "rapid7" (default), multiples of 4096 in [2^60, 3 * 2^60) = [1.15e18, 3.46e18):
    "unique":  seq = 2^60 + band * 2^59 + slot(ts, log) * 2^21 + index_in_ms * 4096
    "per_ms":  seq = 2^60 + band * 2^59 + log.shift     * 2^21 + index_in_ms * 4096

    shape "odd" (the emulator's older shape), about 4.9e18, never a multiple of 256:
    "unique":  seq = 2^60 + slot(ts) * 2^21 + index_in_ms * 4096 + seq_offset
    "per_ms":  seq = 2^60 +                   index_in_ms * 4096 + seq_offset

"rapid7" is what real answers look like: Rapid7's fixtures show 1211198512587571200,
3235937417370673152, 3237201778429120512 (three entries of one millisecond stepping by 8192
and 4096 from there), the spec's context examples 3234729357719937024 and
3237124846739517440, all multiples of 4096 between 1.2e18 and 3.3e18 (the spec's
2234733321019952220 is hand-written: not a multiple of 4096). Such values are above 2^53 but
exactly representable as doubles, so a client that goes through a float only loses them when it
prints the float back. "odd" numbers are not representable at all (every log has its own odd
`seq_offset` < 4096): a test that wants float-parsing bugs to show uses it.

"unique" numbers never repeat in a log ("rapid7": within any 2^38 ms, 8.7 years; slots wrap
after that): `slot` permutes the milliseconds inside each 1024-ms block, so numbers step by 4096
inside a millisecond but are not monotonic across milliseconds, as in real samples. "per_ms" is
a per-millisecond counter: the same numbers recur in every millisecond of a log, so only the
full (log, timestamp, sequence number) is a key. In every combination two logs never share a
number inside one millisecond ("rapid7": each log has its own `shift` of the slot, distinct
across logs; "odd": its own offset), so a multi-log Next link resuming at one number skips no
other log's entry. Entries sort by (timestamp, sequence_number, log index).

`timestamp` is when Rapid7 *received* the entry. The message carries the event's own time,
earlier: most by 1-25 s, about 5 % by 1-30 minutes (late forwarders), 0.5 % carry no time at
all. Shapes: IDR-like JSON (`"timestamp":"<ISO>Z"`), Windows event JSON (`"timeGenerated"` with
`Z` or `+00:00`, `EventID`, `Computer`), JSON with `"time": <epoch ms>`, syslog text (sshd, or
a firewall's `key=value` pairs), multi-line
Java text, malformed JSON, a few very long lines. `Event.event_ms` keeps the time written into
the message (None if none) and `Event.kind` the shape, so tests can check a time extractor.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import NamedTuple

from logsearch_emulator.options import MAX_EVENTS_PER_MS, EmulatorOptions

BUCKET_MS = 60_000
SEQ_BASE = 1 << 60
SEQ_STEP = 4096
SLOT_WIDTH = SEQ_STEP * MAX_EVENTS_PER_MS  # 2^21
MAX_TIMESTAMP_MS = (1 << 41) - 1  # keeps every sequence number below 2^63 (year 2039)
# Shape "rapid7": four bands of 2^59 above 2^60; a slot is one of 2^38 (2^28 blocks of 1024).
RAPID7_BAND = 1 << 59
RAPID7_BANDS = 4
RAPID7_BLOCKS = 1 << 28

FRAGMENT_MID = b'","href":"'

OUT_OF_ORDER_LABEL_ID = "00000000-0000-0000-0000-000000000006"
OUT_OF_EVENTS_LABEL_ID = "00000000-0000-0000-0000-000000000007"
# Two user labels (made up, shaped like the reserved ones; users create their own in the
# console). Events carry at most one label: "Out of order entry" (3 %) or one of these (1.5 %
# and 0.5 %); "Out of events" is reserved and carried by none.
SUSPICIOUS_LABEL_ID = "6c1b8a4e-2f0d-4c55-9a7e-3e1f0b2d9c10"
REVIEWED_LABEL_ID = "b4f2d7c1-8e3a-4b6f-a1d9-5c0e7f2a8b34"
# Event labels are `[{"id", "links": [{"rel": "Self", "href": "<base>/management/labels/<id>"}]}]`
# as in Rapid7's examples; the rel and base depend on the request, so a labelled event's JSON
# has a second split point (see `Event`).
LABELS_EMPTY_TAIL = b',"labels":[]}'


def _labelled_tails(label_id: str) -> tuple[bytes, bytes]:
    return (
        f',"labels":[{{"id":"{label_id}","links":[{{"rel":"'.encode(),
        f'/management/labels/{label_id}"}}]}}]}}'.encode(),
    )


LABELLED_TAILS = {
    label_id: _labelled_tails(label_id)
    for label_id in (OUT_OF_ORDER_LABEL_ID, SUSPICIOUS_LABEL_ID, REVIEWED_LABEL_ID)
}
# (upper bound of the event's label draw, label id): the first bound above the draw wins.
EVENT_LABEL_SHARES = (
    (0.03, OUT_OF_ORDER_LABEL_ID),
    (0.045, SUSPICIOUS_LABEL_ID),
    (0.05, REVIEWED_LABEL_ID),
)
LABELS = {
    OUT_OF_ORDER_LABEL_ID: {
        "id": OUT_OF_ORDER_LABEL_ID,
        "sn": 6,
        "name": "Out of order entry",
        "color": "ff0000",
        "reserved": True,
    },
    OUT_OF_EVENTS_LABEL_ID: {
        "id": OUT_OF_EVENTS_LABEL_ID,
        "sn": 7,
        "name": "Out of events",
        "color": "ffa500",
        "reserved": True,
    },
    SUSPICIOUS_LABEL_ID: {
        "id": SUSPICIOUS_LABEL_ID,
        "sn": 1001,
        "name": "Suspicious login",
        "color": "9c27b0",
        "reserved": False,
    },
    REVIEWED_LABEL_ID: {
        "id": REVIEWED_LABEL_ID,
        "sn": 1002,
        "name": "Reviewed",
        "color": "4caf50",
        "reserved": False,
    },
}

LOG_NAMES = [
    "Windows Defender",
    "Active Directory",
    "Firewall Activity",
    "DNS Query",
    "Web Proxy Activity",
    "Endpoint Agent",
    "VPN",
    "Cloud Service Activity",
]
LOGSET_NAMES = [
    "Asset Authentication",
    "Firewall Activity",
    "Internal Logs",
    "Unparsed Data",
    "Raw Log",
    "Endpoint Agent",
    "DNS Query",
    "Web Proxy Activity",
]
USERS = ["alice", "bob", "carol", "dave", "erin", "svc-backup", "Zoë", "José", "Łukasz"]
UNICODE_SNIPPETS = ["日本語のログ", "Ünïcödé ✓", "Привет, мир", "emoji 🔐🚀", "مرحبا", "ελληνικά"]
EVENT_TYPES = ["AUTHENTICATION", "PROCESS_START", "DNS_QUERY", "FIREWALL", "FILE_ACCESS"]
RESULTS = ["SUCCESS", "FAILURE", "SUCCESS", "SUCCESS"]
BATCH_SIZES = (1, 1, 1, 2, 2, 3, 4)
LOGON_TYPES = ["NETWORK", "INTERACTIVE", "REMOTE"]
LONG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "
WINDOWS_EVENT_IDS = (4624, 4625, 4634, 4688, 4672)
WINDOWS_LOGON_TYPES = (2, 3, 3, 10)
LEVELS = ("info", "info", "warn", "error")

# Lag of the message's own time behind the receipt time (`timestamp`).
NO_TIME_SHARE = 0.005  # messages without any time
LATE_SHARE = 0.05  # late forwarders: 1-30 minutes
LAG_MS = (1_000, 25_000)
LATE_LAG_MS = (60_000, 1_800_000)

# Message shapes (Event.kind).
KIND_IDR_JSON = "idr_json"  # {"timestamp":"<ISO>Z",...}
KIND_WINDOWS_JSON = "windows_json"  # {"EventID":4624,"timeGenerated":"<ISO>Z|+00:00",...}
KIND_EPOCH_JSON = "epoch_json"  # {"time":<epoch ms>,...}
KIND_SYSLOG = "syslog"  # <134><ISO>Z host sshd[pid]: ...
KIND_JAVA = "java_multiline"  # <ISO>Z ERROR [...] ...\njava.lang...\n\tat ...
KIND_MALFORMED_JSON = "malformed_json"  # starts like JSON with "timestamp", does not parse
KIND_LONG_JSON = "long_json"  # tens of KB, "timestamp":"<ISO>Z"
KIND_NO_TIME_JSON = "no_time_json"  # JSON without any time
KIND_NO_TIME_TEXT = "no_time_text"  # text without any time
MESSAGE_KINDS = (
    KIND_IDR_JSON,
    KIND_WINDOWS_JSON,
    KIND_EPOCH_JSON,
    KIND_SYSLOG,
    KIND_JAVA,
    KIND_MALFORMED_JSON,
    KIND_LONG_JSON,
    KIND_NO_TIME_JSON,
    KIND_NO_TIME_TEXT,
)


class Event(NamedTuple):
    """One stored entry. (ts, seq, log_index) is its unique sort key across logs."""

    ts: int  # receipt time (the API's `timestamp`)
    seq: int
    log_index: int
    late_fraction: float  # visible at ts + late_fraction * late_arrival_seconds
    message: str
    labelled: bool
    # The event's JSON as bytes, split where the Context rel and the base URL go (both depend
    # on the request and options): head + rel + FRAGMENT_MID + base + tail; a labelled event
    # goes on with its label's Self link: + self_rel + FRAGMENT_MID + base + label_tail.
    head: bytes
    tail: bytes
    event_ms: int | None  # the time written into the message, epoch ms (None: it has none)
    kind: str  # the message shape, one of MESSAGE_KINDS
    label_tail: bytes  # b"" when the event has no label
    label_id: str  # "" when the event has no label

    def render(self, rel: bytes, base: bytes, self_rel: bytes = b"Self") -> bytes:
        parts = [self.head, rel, FRAGMENT_MID, base, self.tail]
        if self.label_tail:
            parts += (self_rel, FRAGMENT_MID, base, self.label_tail)
        return b"".join(parts)


@dataclass(frozen=True)
class LogInfo:
    index: int
    id: str
    name: str
    logset_index: int
    seq_offset: int  # odd, < 4096, unique per log: off float values, distinct across logs
    slot_key: int
    band: int = 0  # shape "rapid7": which 2^59 band above 2^60 the log's numbers are in
    shift: int = 0  # shape "rapid7": < 2^28, distinct across logs (see the module docstring)
    # Management data, as in Rapid7's §7.1 sample: a log in the "Internal Logs" log set is
    # `internal` (no token), every other one a `token` log with one token; each has a structure.
    source_type: str = "token"
    structure: str = ""
    token: str = ""


@dataclass(frozen=True)
class LogsetInfo:
    index: int
    id: str
    name: str
    log_indexes: tuple[int, ...]


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def iso_ms(ms: int) -> str:
    """Epoch ms as ISO 8601 UTC with milliseconds and Z."""
    return f"{_iso_second(ms // 1000)}{ms % 1000:03d}Z"


class SyntheticData:
    """Logs, log sets and lazily generated events for one set of data options."""

    def __init__(self, options: EmulatorOptions) -> None:
        self.seed = options.seed
        self.events_per_second = options.events_per_second
        self.burst_probability = options.burst_probability
        self.burst_size = options.burst_size
        self.cache_max_events = options.cache_max_events
        self.per_ms_sequence = options.sequence_numbers == "per_ms"
        self.rapid7_sequence = options.sequence_shape == "rapid7"
        rng = random.Random(f"logs-{options.seed}")
        logset_ids = [
            str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(options.logset_count)
        ]
        self.logs: list[LogInfo] = []
        offsets: set[int] = set()
        # Its own stream, so the log ids and events of a seed are the same in both shapes.
        shift_rng = random.Random(f"sequence-shifts-{options.seed}")
        shifts: set[int] = set()
        for i in range(options.log_count):
            log_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            name = LOG_NAMES[i % len(LOG_NAMES)] + ("" if i < len(LOG_NAMES) else f" {i}")
            offset = rng.randrange(1, SEQ_STEP) | 1
            while offset in offsets:  # no extra draw: the rest of the data stays the same
                offset = (offset + 2) % SEQ_STEP
            offsets.add(offset)
            shift = shift_rng.randrange(RAPID7_BLOCKS)
            while shift in shifts:  # distinct across logs: no shared number inside one ms
                shift = (shift + 1) % RAPID7_BLOCKS
            shifts.add(shift)
            internal = LOGSET_NAMES[(i % options.logset_count) % len(LOGSET_NAMES)]
            source_type = "internal" if internal == "Internal Logs" else "token"
            token = str(uuid.UUID(int=shift_rng.getrandbits(128), version=4))
            self.logs.append(
                LogInfo(
                    index=i,
                    id=log_id,
                    name=name,
                    logset_index=i % options.logset_count,
                    seq_offset=offset,
                    slot_key=rng.randrange(1024),
                    band=shift_rng.randrange(RAPID7_BANDS),
                    shift=shift,
                    source_type=source_type,
                    structure=str(uuid.UUID(int=shift_rng.getrandbits(128), version=4)),
                    token=token if source_type == "token" else "",
                )
            )
        self.logsets: list[LogsetInfo] = [
            LogsetInfo(
                index=j,
                id=logset_ids[j],
                name=LOGSET_NAMES[j % len(LOGSET_NAMES)]
                + ("" if j < len(LOGSET_NAMES) else f" {j}"),
                log_indexes=tuple(log.index for log in self.logs if log.logset_index == j),
            )
            for j in range(options.logset_count)
        ]
        self.log_by_id = {log.id: log for log in self.logs}
        self.logset_by_id = {ls.id: ls for ls in self.logsets}
        self._cache: OrderedDict[tuple[int, int], tuple[list[Event], list[int]]] = OrderedDict()
        self._cached_events = 0
        self._lock = threading.Lock()
        self.buckets_generated = 0

    @property
    def cached_events(self) -> int:
        return self._cached_events

    # ----------------------------------------------------------------- sequence numbers
    def sequence_number(self, log: LogInfo, ts: int, index_in_ms: int) -> int:
        """The layouts of the module docstring; `index_in_ms` < MAX_EVENTS_PER_MS."""
        if self.rapid7_sequence:
            base = SEQ_BASE + log.band * RAPID7_BAND + index_in_ms * SEQ_STEP
            if self.per_ms_sequence:
                return base + log.shift * SLOT_WIDTH
            block = ((ts >> 10) + log.shift) % RAPID7_BLOCKS
            low = ((ts & 1023) * 661 + log.slot_key) & 1023
            return base + ((block << 10) | low) * SLOT_WIDTH
        if self.per_ms_sequence:
            return SEQ_BASE + index_in_ms * SEQ_STEP + log.seq_offset
        low = ts & 1023
        slot = (ts & ~1023) | ((low * 661 + log.slot_key) & 1023)
        return SEQ_BASE + slot * SLOT_WIDTH + index_in_ms * SEQ_STEP + log.seq_offset

    # ----------------------------------------------------------------- buckets
    def bucket(self, log_index: int, bucket_index: int) -> tuple[list[Event], list[int]]:
        """Events of one log in one minute, sorted by (ts, seq), and their timestamps."""
        key = (log_index, bucket_index)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        events = self._generate(self.logs[log_index], bucket_index)
        result = (events, [e.ts for e in events])
        with self._lock:
            # An empty bucket weighs 1, so sparse data over long ranges stays bounded too.
            if key not in self._cache:
                self._cache[key] = result
                self._cached_events += len(events) + 1
                self.buckets_generated += 1
            while self._cached_events > self.cache_max_events and len(self._cache) > 1:
                self._cached_events -= len(self._cache.popitem(last=False)[1][0]) + 1
        return result

    def _generate(self, log: LogInfo, bucket_index: int) -> list[Event]:
        start = bucket_index * BUCKET_MS
        if start > MAX_TIMESTAMP_MS or bucket_index < 0:
            return []
        rng = random.Random((self.seed * 1_000_003 + log.index) * (1 << 44) + bucket_index)
        r = rng.random
        per_ms: dict[int, int] = {}
        remaining = _poisson(rng, self.events_per_second * BUCKET_MS / 1000)
        while remaining > 0:  # ingestion batches: 1..4 entries share one millisecond
            size = min(remaining, BATCH_SIZES[int(r() * len(BATCH_SIZES))])
            ms = start + int(r() * BUCKET_MS)
            per_ms[ms] = per_ms.get(ms, 0) + size
            remaining -= size
        if self.burst_probability and r() < self.burst_probability:
            ms = start + int(r() * BUCKET_MS)
            smallest = max(2, self.burst_size // 2)
            size = smallest + int(r() * (self.burst_size - smallest + 1))
            per_ms[ms] = per_ms.get(ms, 0) + size
        events: list[Event] = []
        for ms in sorted(per_ms):
            for i in range(min(per_ms[ms], MAX_EVENTS_PER_MS)):
                events.append(self._event(rng, log, ms, i))
        return events

    def _event(self, rng: random.Random, log: LogInfo, ts: int, index_in_ms: int) -> Event:
        seq = self.sequence_number(log, ts, index_in_ms)
        message, event_ms, kind = _message(rng, ts)
        draw = rng.random()
        label_id = ""
        for bound, candidate in EVENT_LABEL_SHARES:
            if draw < bound:
                label_id = candidate
                break
        label_head, label_tail = LABELLED_TAILS[label_id] if label_id else (LABELS_EMPTY_TAIL, b"")
        head = (
            f'{{"timestamp":{ts},"sequence_number":{seq},"sequence_number_str":"{seq}",'
            f'"log_id":"{log.id}","message":{encode_basestring(message)},'
            '"links":[{"rel":"'
        ).encode()
        tail = (
            f"/query/context/{seq}?per_page=50&timestamp={ts}&log_keys={log.id}"
            '&context_type=SURROUND"}]'
        ).encode() + label_head
        return Event(
            ts,
            seq,
            log.index,
            rng.random(),
            message,
            bool(label_id),
            head,
            tail,
            event_ms,
            kind,
            label_tail,
            label_id,
        )

    # ----------------------------------------------------------------- iteration
    def iter_log(self, log_index: int, lo: int, hi: int, reverse: bool = False) -> Iterator[Event]:
        """Events of one log with lo <= ts < hi, ascending (or descending) by (ts, seq)."""
        hi = min(hi, MAX_TIMESTAMP_MS + 1)
        lo = max(lo, 0)
        if hi <= lo:
            return
        first, last = lo // BUCKET_MS, (hi - 1) // BUCKET_MS
        indexes = range(last, first - 1, -1) if reverse else range(first, last + 1)
        for b in indexes:
            events, stamps = self.bucket(log_index, b)
            i = bisect.bisect_left(stamps, lo)
            j = bisect.bisect_left(stamps, hi)
            if i >= j:
                continue
            if reverse:
                yield from reversed(events[i:j])
            else:
                yield from events[i:j]

    def iter_logs(
        self, log_indexes: tuple[int, ...], lo: int, hi: int, reverse: bool = False
    ) -> Iterator[Event]:
        """Events of several logs merged by (ts, seq, log_index)."""
        streams = [self.iter_log(i, lo, hi, reverse) for i in log_indexes]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, reverse=reverse)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _iso_offset(ms: int) -> str:
    """ISO 8601 with a numeric UTC offset instead of Z (as some Windows forwarders write it)."""
    return f"{_iso_second(ms // 1000)}{ms % 1000:03d}+00:00"


def _message(rng: random.Random, ts: int) -> tuple[str, int | None, str]:
    """A raw log line received at `ts`: (message, its own time in epoch ms or None, kind).

    Written with `random()` arithmetic and f-strings rather than randrange/choice/json.dumps:
    generation speed bounds the emulator's cold throughput. Values never contain quotes or
    backslashes, so the f-string JSON is valid (except where it is malformed on purpose).
    """
    r = rng.random
    kind = r()
    lag = r()
    user = USERS[int(r() * len(USERS))]
    ip = f"10.{int(r() * 256)}.{int(r() * 256)}.{1 + int(r() * 254)}"
    if lag < NO_TIME_SHARE:  # no time at all
        if kind < 0.5:
            return (
                f'{{"event_type":"HEARTBEAT","agent":"agent-{int(r() * 100)}",'
                f'"user":"{user}","source_ip":"{ip}","status":"ok"}}',
                None,
                KIND_NO_TIME_JSON,
            )
        return (
            f"Connection closed by {ip} port {1024 + int(r() * 60000)} [preauth]",
            None,
            KIND_NO_TIME_TEXT,
        )
    if lag < NO_TIME_SHARE + LATE_SHARE:
        event_ms = ts - LATE_LAG_MS[0] - int(r() * (LATE_LAG_MS[1] - LATE_LAG_MS[0]))
    else:
        event_ms = ts - LAG_MS[0] - int(r() * (LAG_MS[1] - LAG_MS[0]))
    if kind < 0.0005:  # a few very long lines (tens of KB)
        chunk = "".join(LONG_ALPHABET[int(r() * len(LONG_ALPHABET))] for _ in range(64))
        payload = chunk * (300 + int(r() * 600))
        return (
            f'{{"timestamp":"{iso_ms(event_ms)}","event_type":"BLOB","user":"{user}",'
            f'"payload":"{payload}"}}',
            event_ms,
            KIND_LONG_JSON,
        )
    if kind < 0.005:  # looks like JSON but is not (real messages sometimes are malformed)
        return (
            f'{{"timestamp":"{iso_ms(event_ms)}","event_type":"PROCESS_START",'
            f'"args":["-c", "x",, ],"user":"{user}",\t"cmd":"unterminated}}',
            event_ms,
            KIND_MALFORMED_JSON,
        )
    if kind < 0.04:  # syslog text with key=value pairs (a firewall), same draws as sshd's
        host, pid = int(r() * 100), int(r() * 9999)
        return (
            f"<134>{iso_ms(event_ms)} fw-{host} filterlog[{pid}]: "
            f"action={'block' if pid % 5 == 0 else 'allow'} proto=tcp src={ip} "
            f'dport={1024 + pid} user={user} rule="inbound {host}"',
            event_ms,
            KIND_SYSLOG,
        )
    if kind < 0.07:  # plain syslog text
        return (
            f"<134>{iso_ms(event_ms)} host-{int(r() * 100)} sshd[{int(r() * 9999)}]: "
            f"Accepted publickey for {user} from {ip} port 22 ssh2",
            event_ms,
            KIND_SYSLOG,
        )
    if kind < 0.11:  # multi-line
        return (
            f"{iso_ms(event_ms)} ERROR [worker-{int(r() * 16)}] Request failed for {user}\n"
            "java.lang.IllegalStateException: connection reset\n"
            "\tat com.example.Client.send(Client.java:42)\n"
            "\tat com.example.Worker.run(Worker.java:7)",
            event_ms,
            KIND_JAVA,
        )
    if kind < 0.21:  # Windows event log, forwarded as JSON
        generated = iso_ms(event_ms) if r() < 0.5 else _iso_offset(event_ms)
        return (
            f'{{"EventID":{WINDOWS_EVENT_IDS[int(r() * 5)]},"timeGenerated":"{generated}",'
            f'"Computer":"WS-{int(r() * 500):03d}.corp.example.com","Channel":"Security",'
            f'"ProviderName":"Microsoft-Windows-Security-Auditing",'
            f'"TargetUserName":"{user}","IpAddress":"{ip}",'
            f'"LogonType":{WINDOWS_LOGON_TYPES[int(r() * 4)]}}}',
            event_ms,
            KIND_WINDOWS_JSON,
        )
    if kind < 0.26:  # application JSON with an epoch-ms time
        return (
            f'{{"time":{event_ms},"level":"{LEVELS[int(r() * 4)]}",'
            f'"msg":"request served","user":"{user}","client_ip":"{ip}",'
            f'"duration_ms":{int(r() * 2000)}}}',
            event_ms,
            KIND_EPOCH_JSON,
        )
    note = f',"note":"{UNICODE_SNIPPETS[int(r() * len(UNICODE_SNIPPETS))]}"' if kind < 0.31 else ""
    return (
        f'{{"timestamp":"{iso_ms(event_ms)}","event_type":"{EVENT_TYPES[int(r() * 5)]}",'
        f'"result":"{RESULTS[int(r() * 4)]}","user":"{user}","source_ip":"{ip}",'
        f'"destination":"host-{int(r() * 100)}",'
        f'"logon_type":"{LOGON_TYPES[int(r() * 3)]}"{note}}}',
        event_ms,
        KIND_IDR_JSON,
    )
