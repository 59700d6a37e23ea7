"""Every knob of the emulator in one dataclass.

Defaults behave like the real Log Search service as far as `docs/logsearch-api.md` knows it
(Rapid7's own OpenAPI document wins over older pages and guesses); each fault or
awkward behaviour can be switched on for a test, and every point the documents leave open
(is `from` inclusive? is `to`? are sequence numbers unique beyond one millisecond?) is an
option, so a client can be tested against each reading. Options can change
while the emulator runs (`RunningEmulator.update_options`), so nothing here is cached by the
server except the synthetic data, which is rebuilt when a field in `DATA_FIELDS` changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Hard limit of events sharing one millisecond in one log: the sequence-number layout reserves
# this many 4096-steps per millisecond (see data.py), so a burst can never be bigger.
MAX_EVENTS_PER_MS = 512

# Every log gets its own odd offset below 4096 (data.py, shape "odd"), so at most this many logs.
MAX_LOGS = 2048

SEQUENCE_NUMBER_LAYOUTS = ("unique", "per_ms")
SEQUENCE_SHAPES = ("rapid7", "odd")
KVP_SHAPES = ("flat", "nested_value")

# Fields that shape the synthetic data; changing one rebuilds the data model.
DATA_FIELDS = frozenset(
    {
        "seed",
        "log_count",
        "logset_count",
        "events_per_second",
        "burst_probability",
        "burst_size",
        "sequence_numbers",
        "sequence_shape",
    }
)


@dataclass
class EmulatorOptions:
    """Behaviour of one emulator instance; every field has a default."""

    # --- identity and auth
    seed: int = 7
    """Seed of the synthetic data (log ids, events, messages). Same seed, same data."""
    api_key: str = "emulator-key"
    """The only key that is accepted; anything else (or none) gets 401."""
    forbidden_api_key: str | None = "forbidden-key"
    """A key that is known but lacks permission: 403. None disables it."""

    # --- data
    log_count: int = 4
    logset_count: int = 2
    events_per_second: float = 3.0
    """Mean events per second per log (generated lazily per one-minute bucket)."""
    burst_probability: float = 0.1
    """Chance per log and minute of a burst: many events in one millisecond."""
    burst_size: int = 300
    """Largest burst (a burst has between half this and this many events); <= 512."""
    sequence_numbers: str = "unique"
    """Layout of sequence numbers (see data.py). "unique": unique per log (and across logs),
    stepping by 4096 inside a millisecond, not monotonic across milliseconds. "per_ms": a
    per-millisecond counter, so the same numbers recur in every millisecond of a log (the
    spec only promises they tell apart entries received in the same millisecond); logs still
    never share a number inside one millisecond. Both stay above 2^53."""
    sequence_shape: str = "rapid7"
    """Values of sequence numbers (see data.py). "rapid7": multiples of 4096 between 2^60 and
    3 * 2^60 (1.15e18-3.46e18), like every real value in Rapid7's fixtures (1.2e18-3.2e18):
    above 2^53, yet exactly representable as doubles. "odd": the emulator's older shape, about
    4.9e18 with an odd per-log offset, so no value is representable as a double and a client
    that parses them as floats visibly corrupts them (tests of float-parsing bugs use it)."""
    late_arrival_seconds: float = 0.0
    """An event becomes visible up to this long after its timestamp (ingestion lag)."""
    cache_max_events: int = 100_000
    """Bound of the generated-bucket cache, in events (~1.1 KB each)."""
    fixed_now_ms: int | None = None
    """Freeze the emulator's clock at this epoch-ms (tests move it); None = wall clock."""
    retention_days: float | None = 396
    """Entries received before `now - retention_days` are gone: not served, not counted by
    calculate(count), not in the ground truth. A query whose `from` is before that horizon
    answers with `x-beyond-retention: true` and `x-beyond-retention-message` on its start,
    poll and page responses. 396 days = 13 months (hot retention); None = keep everything.
    The horizon follows the emulator clock: with the wall clock, fixed windows in the past
    empty out as time goes by (pin `fixed_now_ms` or set None in tests that need old data)."""

    # --- query semantics
    from_inclusive: bool = True
    """Whether `from` is inclusive. False: only entries with timestamp > from (the spec's
    wording of `sequence_number` suggests the `from` millisecond may be left out). Either way,
    with `sequence_number=S` the `from` millisecond contributes exactly its entries with
    sequence number > S (with `most_recent_first=true` the mirror: `sequence_number` applies to
    the `to` millisecond, entries with numbers < S; that is how a reversed Next link continues).
    The ground truth stays half-open [from, to)."""
    to_inclusive: bool = False
    """Whether `to` is inclusive (real behaviour unconfirmed; half-open by default)."""
    polls_before_ready: int = 2
    """Polls of the Self link until the page is ready; 0 = 200 with the page at once."""
    ready_after_seconds: float = 0.0
    """Additionally, a query is ready only this long after it started (0 = off)."""
    next_is_async: bool = True
    """A Next link is a new query (`/query/logs/{keys}?from=<last ts>&to=..&per_page=..
    &sequence_number=<last seq>&next_page=true`, as Rapid7 documents); following it answers
    202 and needs polling like any start. False: it answers 200 with the page at once. Either
    way it counts in `queries_started`."""
    kvp_shape: str = "flat"
    """Shape of `kvp_info` items (only sent with `kvp_info=true`). "flat": `{"key": {"text",
    "start", "end"}, "value": {...}}`, as the spec's schema and first example. "nested_value":
    `{"key": {"text", "start", "end", "value": {...}}}`, as the spec's second example reads."""
    lowercase_rels: bool = False
    """Emit `self`/`next`/`context` instead of `Self`/`Next`/`Context`."""
    default_per_page: int = 50
    max_per_page: int = 500
    per_page_over_max: str = "clamp"
    """What `per_page` > `max_per_page` does: "clamp" it or "reject" with 400."""
    reject_per_page_on_stats: bool = True
    """A statistical statement (calculate) with `per_page` gets 400 errorCode 101009."""
    link_ttl_seconds: float | None = 20.0
    """Self (polling) links expire this long after their last successful poll (sliding; the
    start counts as the first touch): Rapid7 says they "must be polled at least every 20
    seconds, or they will expire". A poll after that answers 404 `{"message": "HTTP 404 Not
    Found"}` (counted in `faults.expired_links`). A poll answered 429 (or with an injected
    fault) does not refresh the link, so a client rate-limited while polling loses it, as the
    spec warns. None = never expire. Next links do not expire: each one is a new query."""

    # --- budgets (rate limits), see ratelimit.py
    budgets: bool = True
    """Enforce Rapid7's per-key, per-family budgets. False: no budget at all (every family
    unlimited); the X-RateLimit-* headers are still sent, with a large Limit."""
    query_budget: int | None = 1500
    """Query starts per window per key: GET `/query/logs/...`, POST `/query/logs`,
    `/query/logsets...`, `/query/context/...`, and every Next link (a new query). Rapid7: 1,500
    per 15 minutes. When spent: 429 `API rate limit exceeded` until the window resets. None =
    unlimited."""
    poll_budget: int | None = 10000
    """Polls of Self links (GET `/query/{id}`) per window per key. Rapid7: 10,000 per 15
    minutes. None = unlimited."""
    management_budget: int | None = 1500
    """Requests to `/management/*` per window per key. Rapid7: 1,500 per 15 minutes. None =
    unlimited."""
    budget_window_seconds: float = 900.0
    """Length of the fixed budget windows, aligned to multiples of it on the emulator clock
    (Rapid7: 15 minutes). X-RateLimit-Reset and Retry-After are whole seconds (rounded up) when
    this is at least 60, else seconds with millisecond precision (`"2.345"`), so a scaled-down
    model (e.g. 6 s, `query_budget=60`) stays informative."""

    # --- faults
    error_rate: float = 0.0
    """Share of API requests answered with a random 500/502/503."""
    drop_rate: float = 0.0
    """Share of API requests whose connection is closed without any response."""
    fault_seed: int = 0
    """Seed of the fault dice: the same request sequence gets the same faults."""
    force_429_on_request: int | tuple[int, ...] | None = None
    """API request number(s) (1-based, counted by the emulator) answered with 429 exactly like
    a spent budget of that request's family (text/plain `API rate limit exceeded`,
    `X-RateLimit-Remaining: 0`, Reset and Retry-After = time until that family's window resets),
    even with `budgets=False`. Consumes no budget; counted in `faults.forced_429`."""
    forced_429_retry_after: float | None = None
    """`Retry-After` (and Reset) of a forced 429 in seconds; None = until the family's window
    resets. Tests that must not wait a whole budget window (or need a known wait) set it."""
    duplicate_next: bool = False
    """Once, a Next link repeats the href that was just followed (loop-guard test)."""
    non_page_rate: float = 0.0
    """Share of finished page responses (the 200 that would carry events, after polling) that
    are replaced by a 200 without a page: `{}`, `{"events": null}`, `logs`/`leql` without
    `events`, or `{"events": {}}` (fault dice, own stream). Asking the same URL again gets
    the real page: a Self link stays ready (its next answer is the page); a start or Next
    URL simply starts a new query (rolled again). Counted in `faults.non_page_bodies`."""
    request_latency_ms: float = 0.0
    """Delay added to every API request (benchmarks)."""

    def validate(self) -> None:
        """Raise ValueError naming the option at fault."""
        checks: list[tuple[bool, str]] = [
            (1 <= self.log_count <= MAX_LOGS, f"log_count must be in [1, {MAX_LOGS}]"),
            (self.logset_count >= 1, "logset_count must be >= 1"),
            (
                self.forced_429_retry_after is None or self.forced_429_retry_after >= 0,
                "forced_429_retry_after must be >= 0 or None",
            ),
            (self.events_per_second >= 0, "events_per_second must be >= 0"),
            (0 <= self.burst_probability <= 1, "burst_probability must be in [0, 1]"),
            (
                2 <= self.burst_size <= MAX_EVENTS_PER_MS - 12,
                f"burst_size must be in [2, {MAX_EVENTS_PER_MS - 12}]",
            ),
            (self.cache_max_events >= 0, "cache_max_events must be >= 0"),
            (self.late_arrival_seconds >= 0, "late_arrival_seconds must be >= 0"),
            (
                self.sequence_numbers in SEQUENCE_NUMBER_LAYOUTS,
                "sequence_numbers must be 'unique' or 'per_ms'",
            ),
            (
                self.sequence_shape in SEQUENCE_SHAPES,
                "sequence_shape must be 'rapid7' or 'odd'",
            ),
            (self.kvp_shape in KVP_SHAPES, "kvp_shape must be 'flat' or 'nested_value'"),
            (
                self.retention_days is None or self.retention_days > 0,
                "retention_days must be > 0 or None",
            ),
            (self.polls_before_ready >= 0, "polls_before_ready must be >= 0"),
            (self.ready_after_seconds >= 0, "ready_after_seconds must be >= 0"),
            (self.max_per_page >= 1, "max_per_page must be >= 1"),
            (
                1 <= self.default_per_page <= self.max_per_page,
                "default_per_page must be in [1, max_per_page]",
            ),
            (
                self.per_page_over_max in ("clamp", "reject"),
                "per_page_over_max must be 'clamp' or 'reject'",
            ),
            (
                self.link_ttl_seconds is None or self.link_ttl_seconds > 0,
                "link_ttl_seconds must be > 0 or None",
            ),
            *(
                (budget is None or budget >= 0, f"{name} must be >= 0 or None")
                for name, budget in (
                    ("query_budget", self.query_budget),
                    ("poll_budget", self.poll_budget),
                    ("management_budget", self.management_budget),
                )
            ),
            (
                self.budget_window_seconds >= 0.001,
                "budget_window_seconds must be >= 0.001 (one millisecond)",
            ),
            (0 <= self.error_rate <= 1, "error_rate must be in [0, 1]"),
            (0 <= self.drop_rate <= 1, "drop_rate must be in [0, 1]"),
            (0 <= self.non_page_rate <= 1, "non_page_rate must be in [0, 1]"),
            (self.request_latency_ms >= 0, "request_latency_ms must be >= 0"),
            (bool(self.api_key), "api_key must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"EmulatorOptions: {message}")

    def retention_horizon_ms(self, now_ms: int) -> int | None:
        """Oldest receipt time still stored at `now_ms` (None: no retention limit)."""
        if self.retention_days is None:
            return None
        return now_ms - round(self.retention_days * 86_400_000)

    def budget_for(self, family: str) -> int | None:
        """The budget of one family ("query", "poll", "management") per window; None when it
        is unlimited (its option is None, or `budgets` is False)."""
        if not self.budgets:
            return None
        return {
            "query": self.query_budget,
            "poll": self.poll_budget,
            "management": self.management_budget,
        }[family]

    def forced_429_requests(self) -> frozenset[int]:
        """`force_429_on_request` as a set of request numbers."""
        value = self.force_429_on_request
        if value is None:
            return frozenset()
        if isinstance(value, int):
            return frozenset({value})
        return frozenset(int(v) for v in value)


def option_names() -> list[str]:
    """Names of all options, in declaration order (used by the CLI)."""
    return [f.name for f in dataclasses.fields(EmulatorOptions)]
