"""The emulator's request handling, independent of the HTTP server.

`EmulatorApp.handle()` takes a parsed request and returns a `Response` (or a "drop the
connection" verdict). Order per API request: latency, forced 429, random faults (drop, 5xx),
auth (401/403), the budget of the request's family (429, see ratelimit.py), then the endpoint.
Every answered API request carries its family's X-RateLimit-* headers. `/_emulator/*` (ground
truth, stats) is outside the API: no auth, no faults, no budgets, no rate-limit headers.

Every query start (GET `/query/logs/{keys}`, `/query/logsets…`, POST `/query/logs`, and every
Next link, which is a GET start with `next_page=true`) counts in `requests.queries_started`.
The ground truth is keyed like Rapid7 identifies an entry: (log_id, timestamp, sequence number
as a string); JSON `[log_id, ts, "seq"]`.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from logsearch_emulator import kvp
from logsearch_emulator.data import LABELS, Event, SyntheticData, iso_ms
from logsearch_emulator.faults import FaultInjector
from logsearch_emulator.leql import INVALID_STATEMENT_CODE, StatementError, parse_statement
from logsearch_emulator.options import DATA_FIELDS, EmulatorOptions
from logsearch_emulator.queries import (
    ContextSpec,
    Continuation,
    QuerySpec,
    Registry,
    iter_matching,
    page_events,
    query_bounds,
    render_page,
    running_body,
    statistics_body,
)
from logsearch_emulator.ratelimit import (
    FAMILIES,
    RATE_LIMITED_BODY,
    RateDecision,
    RateLimiter,
    family_of,
)

# Emulator-defined errorCodes (the real ones are unconfirmed except 101009).
MISSING_WINDOW_CODE = 100000
INVALID_WINDOW_CODE = 100001
INVALID_PER_PAGE_CODE = 100003
PER_PAGE_OVER_MAX_CODE = 100004
INVALID_BODY_CODE = 100005
INVALID_CONTINUATION_CODE = 100006
UNSUPPORTED_MEDIA_CODE = 100007
STATS_PER_PAGE_CODE = 101009

NOT_FOUND = {"message": "HTTP 404 Not Found"}
ORG_ID = "00000000-emulator-org"
INVALID_CONTEXT_CODE = 100008
CONTEXT_TYPES = ("BEFORE", "AFTER", "SURROUND")
# Rapid7: a Context query's entries are those around the given one "until there is a gap of 60
# seconds between log entries"; a page of N entries therefore spans at most N * 60 s each way.
CONTEXT_GAP_MS = 60_000
TOPKEYS_SAMPLE_MS = 3_600_000  # topkeys: the keys of the last hour of a log
TOPKEYS_SAMPLE_EVENTS = 2_000  # ... at most this many entries (bounded per request)
TOPKEYS_MAX = 10
# Rapid7's `time_range` grammar: `today`, `yesterday`, or `last x timeunits` (x a positive
# integer; units, case-insensitive: min(s)/minute(s), hr(s)/hour(s), day(s), week(s),
# month(s), year(s)). Days are UTC days; months and years are calendar ones.
_TIME_RANGE = re.compile(
    r"^\s*last\s+(?P<n>[0-9]+)\s*"
    r"(?P<unit>mins?|minutes?|hrs?|hours?|days?|weeks?|months?|years?)\s*$",
    re.I,
)
_UNIT_MS = {"min": 60_000, "hr": 3_600_000, "hour": 3_600_000, "day": 86_400_000}
_UNIT_MS |= {"minute": 60_000, "week": 604_800_000}
DAY_MS = 86_400_000

TruthKey = tuple[str, int, str]  # (log_id, timestamp, sequence_number_str)


class HeaderLookup(Protocol):
    """Request headers as `handle` reads them: a plain mapping or `http.server`'s `Message`."""

    def get(self, name: str, /) -> str | None: ...


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class ApiError(Exception):
    """An error answer (status + JSON body) raised from deep inside a handler."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _bad_request(code: int, message: str) -> ApiError:
    return ApiError(400, {"errorCode": code, "message": message})


def _json(status: int, body: object) -> Response:
    return Response(status, json.dumps(body, separators=(",", ":")).encode())


def _rate_limited(decision: RateDecision) -> Response:
    """Rapid7's 429: text/plain `API rate limit exceeded`, Remaining 0, Retry-After = Reset."""
    return Response(429, RATE_LIMITED_BODY, decision.limited_headers())


def _new_family_stats() -> dict[str, dict]:
    return {
        family: {"requests": 0, "rate_limited": 0, "forced_429": 0, "min_remaining": None}
        for family in FAMILIES
    }


class EmulatorApp:
    """State and behaviour of one emulator: options, data, queries, limits, faults, counters."""

    def __init__(self, options: EmulatorOptions) -> None:
        options.validate()
        self._lock = threading.RLock()
        self.options = options
        self.data = SyntheticData(options)
        self.registry = Registry()
        self.limiter = RateLimiter()
        self.faults = FaultInjector(options.fault_seed)
        self.counters: Counter[str] = Counter()
        self.status_counts: Counter[int] = Counter()
        self.family_stats = _new_family_stats()
        self._api_requests = 0
        self._duplicate_served = False

    # ----------------------------------------------------------------- options and clock
    def update_options(self, **changes: Any) -> EmulatorOptions:
        """Change knobs at runtime (thread-safe); rebuilds data if a data field changed."""
        with self._lock:
            unknown = set(changes) - {f.name for f in dataclasses.fields(EmulatorOptions)}
            if unknown:
                raise ValueError(f"unknown emulator option(s): {', '.join(sorted(unknown))}")
            new = dataclasses.replace(self.options, **changes)
            new.validate()
            old, self.options = self.options, new
            if any(getattr(old, name) != getattr(new, name) for name in DATA_FIELDS):
                self.data = SyntheticData(new)
            self.data.cache_max_events = new.cache_max_events
            if old.fault_seed != new.fault_seed:
                self.faults.reseed(new.fault_seed)
            if changes.get("duplicate_next"):
                self._duplicate_served = False
            return new

    def now_ms(self) -> int:
        fixed = self.options.fixed_now_ms
        return fixed if fixed is not None else int(time.time() * 1000)

    def rels(self) -> dict[str, str]:
        if self.options.lowercase_rels:
            return {"Self": "self", "Next": "next", "Context": "context", "Related": "related"}
        return {"Self": "Self", "Next": "Next", "Context": "Context", "Related": "Related"}

    def horizon_ms(self, now_ms: int | None = None) -> int | None:
        """Oldest receipt time still retained (None: retention off)."""
        return self.options.retention_horizon_ms(self.now_ms() if now_ms is None else now_ms)

    # ----------------------------------------------------------------- ground truth
    def truth(self, from_ms: int, to_ms: int, log_id: str | None = None) -> list[TruthKey]:
        """Keys (log_id, timestamp, sequence_number_str) of the entries retained and visible
        now with from <= timestamp < to (always half-open, whatever the query options), ordered
        by (log_id, timestamp, sequence_number)."""
        return [key for key, _ in self._truth_events(from_ms, to_ms, log_id)]

    def event_times(
        self, from_ms: int, to_ms: int, log_id: str | None = None
    ) -> dict[TruthKey, int | None]:
        """For the same entries as `truth()`: the time written into each message (epoch ms),
        or None for a message that carries no time. Ground truth for time extractors."""
        return {key: event.event_ms for key, event in self._truth_events(from_ms, to_ms, log_id)}

    def _truth_events(
        self, from_ms: int, to_ms: int, log_id: str | None
    ) -> list[tuple[TruthKey, Event]]:
        data, now = self.data, self.now_ms()
        late_ms = self.options.late_arrival_seconds * 1000
        horizon = self.horizon_ms(now)
        if horizon is not None:
            from_ms = max(from_ms, horizon)
        logs = sorted(data.logs, key=lambda log: log.id)
        if log_id is not None:
            if log_id not in data.log_by_id:
                raise KeyError(log_id)
            logs = [data.log_by_id[log_id]]
        out: list[tuple[TruthKey, Event]] = []
        for log in logs:
            for event in data.iter_log(log.index, from_ms, min(to_ms, now + 1)):
                if event.ts + int(event.late_fraction * late_ms) <= now:
                    out.append(((log.id, event.ts, str(event.seq)), event))
        return out

    def events(self, log_id: str, from_ms: int, to_ms: int, base_url: str) -> list[dict]:
        """The event dicts the API would serve for one log now (half-open window)."""
        log = self.data.log_by_id[log_id]
        spec = self._spec(
            (log.index,),
            "",
            from_ms=from_ms,
            to_ms=to_ms,
            per_page=1,
            mrf=False,
            from_inclusive=True,
            to_inclusive=False,
        )
        rels = self.rels()
        rel, self_rel, base = rels["Context"].encode(), rels["Self"].encode(), base_url.encode()
        now = self.now_ms()
        return [
            json.loads(e.render(rel, base, self_rel))
            for e in iter_matching(
                self.data, spec, now, self.options.late_arrival_seconds, self.horizon_ms(now)
            )
        ]

    def stats(self) -> dict:
        """Counters. `budgets` has, per family (query, poll, management): `requests` answered
        (dropped connections not counted), `rate_limited` (429s for a spent budget; their sum is
        `faults.rate_limited`), `forced_429` (429s from `force_429_on_request`) and
        `min_remaining`, the lowest X-RateLimit-Remaining sent (None before the first answer).
        `requests.{query,poll,management}_requests` count requests received per family."""
        with self._lock:
            return {
                "api_requests": self._api_requests,
                "requests": dict(self.counters),
                "budgets": {family: dict(values) for family, values in self.family_stats.items()},
                # API responses by status; "0" counts dropped connections
                "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
                "faults": {
                    name: self.counters.get(name, 0)
                    for name in (
                        "dropped",
                        "server_errors",
                        "forced_429",
                        "rate_limited",
                        "expired_links",
                        "duplicate_next",
                        "non_page_bodies",
                    )
                },
                "connections": self.counters.get("connections", 0),
                "live_continuations": len(self.registry),
                "buckets_generated": self.data.buckets_generated,
                "cached_events": self.data.cached_events,
            }

    def count_connection(self) -> None:
        """Called by the server for every accepted TCP connection (keep-alive check)."""
        self._count("connections")

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    # ----------------------------------------------------------------- entry point
    def handle(
        self, method: str, target: str, headers: HeaderLookup, body: bytes, host: str
    ) -> Response:
        parts = urlsplit(target)
        path, params = parts.path, parse_qs(parts.query, keep_blank_values=True)
        prefix = ""
        if path == "/log_search" or path.startswith("/log_search/"):
            prefix, path = "/log_search", path[len("/log_search") :] or "/"
        base = f"http://{host}{prefix}"
        if path.startswith("/_emulator/"):
            response = self._internal(path, params)
        else:
            href = f"{base}{path}" + (f"?{parts.query}" if parts.query else "")
            family = family_of(path)
            response = self._api(
                method,
                path,
                params,
                family=family,
                headers=headers,
                body=body,
                base=base,
                href=href,
            )
            self._account(family, response)
        response.headers.setdefault("Content-Type", "application/json")
        return response

    def _internal(self, path: str, params: dict[str, list[str]]) -> Response:
        if path == "/_emulator/stats":
            return _json(200, self.stats())
        if path == "/_emulator/truth":
            try:
                from_ms, to_ms = int(params["from"][0]), int(params["to"][0])
            except (KeyError, ValueError):
                return _json(400, {"message": "from and to (epoch ms integers) are required"})
            try:
                keys = self.truth(from_ms, to_ms, params.get("log_id", [None])[0])
            except KeyError:
                return _json(404, NOT_FOUND)
            return _json(200, {"count": len(keys), "keys": [list(k) for k in keys]})
        return _json(404, NOT_FOUND)

    def _account(self, family: str, response: Response) -> None:
        """Count one API answer: its status, and its family's requests and lowest Remaining."""
        with self._lock:
            self.status_counts[0 if response.drop else response.status] += 1
            if response.drop:
                return
            stats = self.family_stats[family]
            stats["requests"] += 1
            remaining = int(response.headers["X-RateLimit-Remaining"])
            if stats["min_remaining"] is None or remaining < stats["min_remaining"]:
                stats["min_remaining"] = remaining

    def _budget_check(self, key: str, family: str, *, consume: bool) -> RateDecision:
        opts = self.options
        return self.limiter.check(
            key,
            family,
            budget=opts.budget_for(family),
            window_s=opts.budget_window_seconds,
            now_ms=self.now_ms(),
            consume=consume,
        )

    def _api(
        self,
        method: str,
        path: str,
        params: dict[str, list[str]],
        *,
        family: str,
        headers: HeaderLookup,
        body: bytes,
        base: str,
        href: str,
    ) -> Response:
        opts = self.options
        with self._lock:
            self._api_requests += 1
            number = self._api_requests
            self.counters[f"{family}_requests"] += 1
        if opts.request_latency_ms:
            time.sleep(opts.request_latency_ms / 1000)
        key = headers.get("X-Api-Key") or ""
        drop, error = self.faults.roll(opts.drop_rate, opts.error_rate)
        peek = self._budget_check(key, family, consume=False)
        if number in opts.forced_429_requests():
            with self._lock:
                self.counters["forced_429"] += 1
                self.family_stats[family]["forced_429"] += 1
            response = _rate_limited(peek)
            if opts.forced_429_retry_after is not None:
                wait = f"{opts.forced_429_retry_after:g}"
                response.headers.update({"Retry-After": wait, "X-RateLimit-Reset": wait})
            return response
        if drop:
            self._count("dropped")
            return Response(0, drop=True)
        if error is not None:
            self._count("server_errors")
            response = _json(error, {"message": "Emulated server error"})
            response.headers.update(peek.headers())
            return response
        if opts.forbidden_api_key is not None and key == opts.forbidden_api_key:
            response = _json(403, {"message": "Forbidden"})
            response.headers.update(peek.headers())
            return response
        if key != opts.api_key:
            response = _json(401, {"message": "Unauthorized"})
            response.headers.update(peek.headers())
            return response
        decision = self._budget_check(key, family, consume=True)
        if not decision.allowed:
            with self._lock:
                self.counters["rate_limited"] += 1
                self.family_stats[family]["rate_limited"] += 1
            return _rate_limited(decision)
        try:
            response = self._route(
                method,
                path,
                params,
                body,
                base=base,
                href=href,
                content_type=headers.get("Content-Type"),
            )
        except ApiError as exc:
            response = _json(exc.status, exc.body)
        response.headers.update(decision.headers())
        return response

    # ----------------------------------------------------------------- routing
    def _route(
        self,
        method: str,
        path: str,
        params: dict[str, list[str]],
        body: bytes,
        *,
        base: str,
        href: str,
        content_type: str | None = None,
    ) -> Response:
        segments = [s for s in path.split("/") if s]
        data = self.data
        if method == "GET" and body.strip() and not _is_json(body):
            # Rapid7 documents 415 on every GET endpoint for a non-JSON body (none takes one).
            raise ApiError(
                415,
                {"errorCode": UNSUPPORTED_MEDIA_CODE, "message": "Non-JSON request body was given"},
            )
        if method == "GET" and segments[:1] == ["management"]:
            return self._management(segments[1:], base)
        if segments[:1] != ["query"]:
            raise ApiError(404, NOT_FOUND)
        rest = segments[1:]
        if method == "POST" and rest == ["logs"]:
            if not _is_json_media_type(content_type):
                # Rapid7: 415 "Data not specified as JSON" (JSON that does not parse is a 400).
                raise ApiError(
                    415,
                    {"errorCode": UNSUPPORTED_MEDIA_CODE, "message": "Data not specified as JSON"},
                )
            return self._start_post(params, body, base)
        if method != "GET":
            raise ApiError(404, NOT_FOUND)
        if len(rest) == 2 and rest[0] == "logs":
            indexes = []
            for key in rest[1].split(":"):
                if key not in data.log_by_id:
                    raise ApiError(404, NOT_FOUND)
                indexes.append(data.log_by_id[key].index)
            return self._start(tuple(indexes), _param(params, "query"), params, base, href)
        if rest == ["logsets"]:
            names = params.get("logset_name", [])
            by_name = {ls.name: ls for ls in data.logsets}
            if not names or any(n not in by_name for n in names):
                raise ApiError(404, NOT_FOUND)
            indexes = sorted({i for n in names for i in by_name[n].log_indexes})
            return self._start(tuple(indexes), _param(params, "query"), params, base, href)
        if len(rest) == 2 and rest[0] == "logsets":
            logset = data.logset_by_id.get(rest[1])
            if logset is None:
                raise ApiError(404, NOT_FOUND)
            return self._start(logset.log_indexes, _param(params, "query"), params, base, href)
        if len(rest) == 2 and rest[0] == "context":
            return self._context(rest[1], params, base)
        if len(rest) == 1:
            return self._continue(rest[0], params, base)
        raise ApiError(404, NOT_FOUND)

    # ----------------------------------------------------------------- management
    def _log_json(self, index: int, base: str) -> dict:
        log = self.data.logs[index]
        logset = self.data.logsets[log.logset_index]
        rel = self.rels()
        return {
            "id": log.id,
            "name": log.name,
            "logsets_info": [
                {
                    "id": logset.id,
                    "name": logset.name,
                    "rrn": f"rrn:logsearch:us:{ORG_ID}:logset:{logset.id}",
                    "links": [
                        {"rel": rel["Self"], "href": f"{base}/management/logsets/{logset.id}"}
                    ],
                }
            ],
            "links": [{"rel": rel["Related"], "href": f"{base}/management/logs/{log.id}/topkeys"}],
            "retention_period": "default",
            "rrn": f"rrn:logsearch:us:{ORG_ID}:log:{log.id}",
            "source_type": log.source_type,
            "structures": [log.structure],
            "token_seed": None,
            "tokens": [log.token] if log.token else [],
            "user_data": {} if log.source_type == "internal" else {"platform_managed": "true"},
        }

    def _logset_json(self, index: int, base: str) -> dict:
        logset = self.data.logsets[index]
        rel = self.rels()
        return {
            "id": logset.id,
            "name": logset.name,
            "description": None,
            "rrn": f"rrn:logsearch:us:{ORG_ID}:logset:{logset.id}",
            "user_data": {},
            "logs_info": [
                {
                    "id": self.data.logs[i].id,
                    "name": self.data.logs[i].name,
                    "rrn": f"rrn:logsearch:us:{ORG_ID}:log:{self.data.logs[i].id}",
                    "links": [
                        {
                            "rel": rel["Self"],
                            "href": f"{base}/management/logs/{self.data.logs[i].id}",
                        }
                    ],
                }
                for i in logset.log_indexes
            ],
        }

    def _management(self, rest: list[str], base: str) -> Response:
        data = self.data
        if rest == ["logs"]:
            return _json(200, {"logs": [self._log_json(i, base) for i in range(len(data.logs))]})
        if rest == ["logsets"]:
            return _json(
                200, {"logsets": [self._logset_json(i, base) for i in range(len(data.logsets))]}
            )
        if len(rest) == 2 and rest[0] == "logs" and rest[1] in data.log_by_id:
            return _json(200, {"log": self._log_json(data.log_by_id[rest[1]].index, base)})
        if len(rest) == 2 and rest[0] == "logsets" and rest[1] in data.logset_by_id:
            return _json(200, {"logset": self._logset_json(data.logset_by_id[rest[1]].index, base)})
        if len(rest) == 3 and rest[0] == "logs" and rest[2] == "topkeys":
            log = data.log_by_id.get(rest[1])
            if log is None:
                raise ApiError(404, NOT_FOUND)
            return _json(200, {"topkeys": self._topkeys(log.index)})
        if rest == ["labels"]:
            return _json(200, {"labels": list(LABELS.values())})
        if len(rest) == 2 and rest[0] == "labels":
            label = LABELS.get(rest[1])
            if label is None:
                raise ApiError(404, {"code": 404, "message": "HTTP 404 Not Found"})
            return _json(200, {"label": label})
        raise ApiError(404, NOT_FOUND)

    def _topkeys(self, log_index: int) -> list[dict]:
        """`/management/logs/{id}/topkeys`: `[{"key", "weight"}]`, the keys most common in the
        log's recent entries (`kvp_info` keys of the last hour, at most 2,000 entries), weight
        = share of those entries carrying the key, most common first."""
        now = self.now_ms()
        counts: Counter[str] = Counter()
        seen = 0
        for event in self.data.iter_log(log_index, now - TOPKEYS_SAMPLE_MS, now + 1, True):
            seen += 1
            counts.update({pair[0] for pair in kvp.pairs(event.message)})
            if seen >= TOPKEYS_SAMPLE_EVENTS:
                break
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOPKEYS_MAX]
        return [{"key": key, "weight": round(n / seen, 4)} for key, n in ranked]

    # ----------------------------------------------------------------- starting queries
    def _start_post(self, params: dict[str, list[str]], body: bytes, base: str) -> Response:
        try:
            payload = json.loads(body or b"null")
            logs = payload["logs"]
            leql = payload.get("leql") or {}
            during = leql.get("during") or {}
            if not isinstance(logs, list) or not logs:
                raise TypeError("logs")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _bad_request(
                INVALID_BODY_CODE,
                'Body must be JSON {"logs": [...], "leql": {"statement": ..., "during": {...}}}',
            ) from exc
        indexes = []
        for key in logs:
            if key not in self.data.log_by_id:
                raise ApiError(404, NOT_FOUND)
            indexes.append(self.data.log_by_id[key].index)
        merged = dict(params)
        for name in ("from", "to", "time_range"):
            if name in during:
                merged[name] = [str(during[name])]
        return self._start(tuple(indexes), leql.get("statement"), merged, base, None)

    def _window(self, params: dict[str, list[str]]) -> tuple[int, int, str | None]:
        """(from, to, time_range as sent or None)."""
        raw_from, raw_to = _param(params, "from"), _param(params, "to")
        time_range = _param(params, "time_range")
        if time_range is not None:
            if raw_from is not None or raw_to is not None:
                raise _bad_request(
                    INVALID_WINDOW_CODE, "Use either 'time_range' or 'from' and 'to', not both"
                )
            from_ms, to_ms = resolve_time_range(time_range, self.now_ms())
            return from_ms, to_ms, time_range
        if raw_from is None or raw_to is None:
            raise _bad_request(
                MISSING_WINDOW_CODE, "Both 'from' and 'to' (epoch milliseconds) are required"
            )
        try:
            from_ms, to_ms = int(raw_from), int(raw_to)
        except ValueError as exc:
            raise _bad_request(
                INVALID_WINDOW_CODE, "'from' and 'to' must be integer epoch milliseconds"
            ) from exc
        if from_ms < 0 or to_ms < from_ms:
            raise _bad_request(INVALID_WINDOW_CODE, "'from' must be >= 0 and <= 'to'")
        return from_ms, to_ms, None

    def _spec(
        self,
        indexes: tuple[int, ...],
        statement_text: str | None,
        *,
        from_ms: int,
        to_ms: int,
        per_page: int,
        mrf: bool,
        sequence_number: int | None = None,
        from_inclusive: bool | None = None,
        to_inclusive: bool | None = None,
    ) -> QuerySpec:
        """A validated query; inclusivity defaults to the options."""
        try:
            statement = parse_statement(statement_text)
        except StatementError as exc:
            raise _bad_request(INVALID_STATEMENT_CODE, str(exc)) from exc
        opts = self.options
        lower, upper = query_bounds(
            from_ms,
            to_ms,
            from_inclusive=opts.from_inclusive if from_inclusive is None else from_inclusive,
            to_inclusive=opts.to_inclusive if to_inclusive is None else to_inclusive,
            sequence_number=sequence_number,
            most_recent_first=mrf,
        )
        return QuerySpec(
            indexes,
            tuple(self.data.logs[i].id for i in indexes),
            statement,
            from_ms,
            to_ms,
            per_page,
            mrf,
            lower,
            upper,
        )

    def _start(
        self,
        indexes: tuple[int, ...],
        statement_text: str | None,
        params: dict[str, list[str]],
        base: str,
        href: str | None,
    ) -> Response:
        """Start a query: a client's own, or a Next link (`next_page=true`)."""
        opts = self.options
        from_ms, to_ms, time_range = self._window(params)
        raw_per_page = _param(params, "per_page")
        per_page = opts.default_per_page
        if raw_per_page is not None:
            try:
                per_page = int(raw_per_page)
            except ValueError:
                per_page = 0
            if per_page < 1:
                raise _bad_request(INVALID_PER_PAGE_CODE, "'per_page' must be a positive integer")
            if per_page > opts.max_per_page:
                if opts.per_page_over_max == "reject":
                    raise _bad_request(
                        PER_PAGE_OVER_MAX_CODE, f"'per_page' must be <= {opts.max_per_page}"
                    )
                per_page = opts.max_per_page
        mrf = (_param(params, "most_recent_first") or "").lower() == "true"
        sequence_number: int | None = None
        raw_seq = _param(params, "sequence_number")
        if raw_seq is not None:
            try:
                sequence_number = int(raw_seq)
            except ValueError as exc:
                raise _bad_request(
                    INVALID_WINDOW_CODE, "'sequence_number' must be an integer"
                ) from exc
        spec = self._spec(
            indexes,
            statement_text,
            from_ms=from_ms,
            to_ms=to_ms,
            per_page=per_page,
            mrf=mrf,
            sequence_number=sequence_number,
        )
        # Rapid7: `labels` (':'-separated UUIDs) takes precedence over `label`; both only
        # filter event searches (a statistical query ignores them here).
        raw_labels = _param(params, "labels") or _param(params, "label")
        label_ids = frozenset(x for x in raw_labels.split(":") if x) if raw_labels else None
        kvp_info = (_param(params, "kvp_info") or "").lower() == "true"
        spec = dataclasses.replace(
            spec, time_range=time_range, label_ids=label_ids, kvp_info=kvp_info
        )
        if spec.statement.is_count and raw_per_page is not None and opts.reject_per_page_on_stats:
            raise _bad_request(
                STATS_PER_PAGE_CODE, "per_page is not supported for statistical queries"
            )
        is_next = (_param(params, "next_page") or "").lower() == "true"
        now = self.now_ms()
        horizon = self.horizon_ms(now)
        beyond = horizon is not None and from_ms < horizon
        self._count("queries_started")
        if is_next:
            self._count("next_queries_started")
        if beyond:
            self._count("beyond_retention_queries")
        entry = Continuation(
            self.registry.new_id(),
            spec,
            touched_ms=now,
            started_ms=now,
            followed_href=href if is_next else None,
            beyond_retention=beyond,
        )
        immediate = opts.polls_before_ready == 0 and opts.ready_after_seconds == 0
        if immediate or (is_next and not opts.next_is_async):
            entry.ready = True
            return self._finished(entry, base)
        self.registry.add(entry, opts.link_ttl_seconds)
        response = _json(
            202, running_body(spec, entry.id, 0, self._self_href(entry, base), self.rels())
        )
        return self._retention_headers(response, entry)

    def _retention_headers(self, response: Response, entry: Continuation) -> Response:
        if entry.beyond_retention:
            days = self.options.retention_days
            horizon = self.horizon_ms(entry.started_ms)
            response.headers["x-beyond-retention"] = "true"
            response.headers["x-beyond-retention-message"] = (
                "The requested range starts beyond the retention period"
                + (
                    f" ({days:g} days): entries received before {iso_ms(horizon)} "
                    "are no longer available"
                    if days is not None and horizon is not None
                    else ""
                )
            )
        return response

    @staticmethod
    def _self_href(entry: Continuation, base: str) -> str:
        """The polling link; it carries the query's `time_range`, as Rapid7's do (a poll only
        echoes the `time_range` it is sent, as metadata)."""
        href = f"{base}/query/{entry.id}"
        if entry.spec.time_range is not None:
            href += "?" + urlencode({"time_range": entry.spec.time_range})
        return href

    # ----------------------------------------------------------------- polling
    def _continue(self, entry_id: str, params: dict[str, list[str]], base: str) -> Response:
        opts = self.options
        if not self.registry.is_valid_id(entry_id):
            # Rapid7: 400 "Invalid Continuation ID" for an id it never issued (garbled,
            # truncated, made up); 404 only for a real one it no longer knows (expired).
            self._count("invalid_continuations")
            raise _bad_request(INVALID_CONTINUATION_CODE, "Invalid Continuation ID")
        now = self.now_ms()
        entry, expired = self.registry.get(entry_id, now, opts.link_ttl_seconds)
        if entry is None:
            if expired:
                self._count("expired_links")
            raise ApiError(404, NOT_FOUND)
        self.registry.touch(entry, now)  # a successful poll: the link lives another TTL
        echoed = dataclasses.replace(entry.spec, time_range=_param(params, "time_range"))
        with self._lock:
            if not entry.ready:
                entry.polls += 1
                self.counters["polls"] += 1
                if (
                    entry.polls >= opts.polls_before_ready
                    and now - entry.started_ms >= opts.ready_after_seconds * 1000
                ):
                    entry.ready = True
                else:
                    progress = min(99, 100 * entry.polls // max(1, opts.polls_before_ready))
                    if entry.context is not None:
                        body = self._context_running_body(entry, progress, base)
                    else:
                        partial = None
                        if echoed.statement.is_count:
                            partial = statistics_body(
                                self.data,
                                echoed,
                                now,
                                opts.late_arrival_seconds,
                                self.horizon_ms(now),
                                progress=progress,
                            )
                        body = running_body(
                            echoed,
                            entry.id,
                            progress,
                            self._self_href(entry, base),
                            self.rels(),
                            partial=partial,
                        )
                    return self._retention_headers(_json(200, body), entry)
        return self._finished(entry, base, echoed)

    def _finished(
        self, entry: Continuation, base: str, echoed: QuerySpec | None = None
    ) -> Response:
        """The finished answer; `echoed` is the spec as the answer describes it (a poll echoes
        only the `time_range` it was sent)."""
        opts, now = self.options, self.now_ms()
        spec = entry.spec if echoed is None else echoed
        horizon = self.horizon_ms(now)
        if entry.context is not None:
            return self._retention_headers(self._context_page(entry.context, base), entry)
        if spec.statement.is_count:
            self._count("statistics_served")
            response = _json(
                200, statistics_body(self.data, spec, now, opts.late_arrival_seconds, horizon)
            )
            return self._retention_headers(response, entry)
        variant = self.faults.roll_non_page(opts.non_page_rate)
        with self._lock:
            non_page = variant is not None and not entry.non_page_served
            if non_page:
                entry.non_page_served = True  # asking the same Self link again gets the page
                self.counters["non_page_bodies"] += 1
        if variant is not None and non_page:
            return self._retention_headers(_json(200, self._non_page_body(spec, variant)), entry)
        events, more = page_events(self.data, spec, now, opts.late_arrival_seconds, horizon)
        next_href = None
        if more:
            with self._lock:
                duplicate = (
                    opts.duplicate_next
                    and entry.followed_href is not None
                    and not self._duplicate_served
                )
                if duplicate:
                    self._duplicate_served = True
                    self.counters["duplicate_next"] += 1
            next_href = (
                entry.followed_href if duplicate else self._next_href(spec, events[-1], base)
            )
        with self._lock:
            self.counters["pages_served"] += 1
            self.counters["events_served"] += len(events)
        links = [("Next", next_href)] if next_href is not None else []
        page = render_page(spec, events, links, base, self.rels(), kvp_shape=opts.kvp_shape)
        return self._retention_headers(Response(200, page), entry)

    @staticmethod
    def _non_page_body(spec: QuerySpec, variant: int) -> dict:
        """A 200 body that is no page (see `non_page_rate`)."""
        if variant == 0:
            return {}
        if variant == 1:
            return {"events": None}
        if variant == 2:
            return {"logs": list(spec.log_ids), "leql": spec.leql()}
        return {"events": {}}

    @staticmethod
    def _next_href(spec: QuerySpec, last: Event, base: str) -> str:
        """Rapid7's Next: a new query from the last entry of this page on.

        Ascending: `from=<last ts>&to=<to as sent>&sequence_number=<last seq>`, which yields the
        rest of the last millisecond (sequence numbers larger than the last one) and everything
        after it. `most_recent_first`: the mirror, `from=<from as sent>&to=<last ts>` with the
        sequence number applying to the `to` millisecond (smaller ones), see `query_bounds`.
        """
        if spec.most_recent_first:
            window = [("from", spec.from_ms), ("to", last.ts)]
        else:
            window = [("from", last.ts), ("to", spec.to_ms)]
        params: list[tuple[str, object]] = [
            *window,
            ("per_page", spec.per_page),
            ("sequence_number", last.seq),
            ("next_page", "true"),
        ]
        if spec.statement.text:
            params.append(("query", spec.statement.text))
        if spec.label_ids is not None:
            params.append(("labels", ":".join(sorted(spec.label_ids))))
        if spec.kvp_info:
            params.append(("kvp_info", "true"))
        if spec.most_recent_first:
            params.append(("most_recent_first", "true"))
        return f"{base}/query/logs/{':'.join(spec.log_ids)}?" + urlencode(
            params, quote_via=quote, safe=""
        )

    def _context(self, raw_seq: str, params: dict[str, list[str]], base: str) -> Response:
        """Start a Context query (the per-event Context link, or a Context page's Prev/Next):
        a query like any other, so it answers 202 with a Self link until it is ready (same
        options as a search: `polls_before_ready`, `ready_after_seconds`), then the page.

        Rapid7: 400 "Invalid Context Request" for a malformed request (missing or non-integer
        `timestamp`, unknown `context_type`, bad `per_page`); 404 "Log not found, or invalid
        sequence number" for an unknown log or an entry that is not in it."""
        opts = self.options
        try:
            seq, ts = int(raw_seq), int(_param(params, "timestamp") or "")
            per_page = int(_param(params, "per_page") or 50)
        except ValueError as exc:
            raise _bad_request(INVALID_CONTEXT_CODE, "Invalid Context Request") from exc
        kind = (_param(params, "context_type") or "").upper()
        if kind not in CONTEXT_TYPES or per_page < 1:
            raise _bad_request(INVALID_CONTEXT_CODE, "Invalid Context Request")
        log = self.data.log_by_id.get(_param(params, "log_keys") or "")
        if log is None:
            raise ApiError(404, NOT_FOUND)
        context = ContextSpec(
            log.index,
            log.id,
            seq,
            ts,
            kind,
            min(per_page, opts.max_per_page),
            (_param(params, "most_recent_first") or "").lower() == "true",
            (_param(params, "kvp_info") or "").lower() == "true",
        )
        if self._context_entries(context) is None:
            raise ApiError(404, NOT_FOUND)
        spec = self._spec(
            (log.index,),
            "",
            from_ms=ts,
            to_ms=ts,
            per_page=context.per_page,
            mrf=context.most_recent_first,
            from_inclusive=True,
            to_inclusive=True,
        )
        now = self.now_ms()
        horizon = self.horizon_ms(now)
        self._count("queries_started")
        self._count("context_queries_started")
        entry = Continuation(
            self.registry.new_id(),
            dataclasses.replace(spec, kvp_info=context.kvp_info),
            touched_ms=now,
            started_ms=now,
            beyond_retention=horizon is not None and ts < horizon,
            context=context,
        )
        if opts.polls_before_ready == 0 and opts.ready_after_seconds == 0:
            entry.ready = True
            return self._finished(entry, base)
        self.registry.add(entry, opts.link_ttl_seconds)
        body = self._context_running_body(entry, 0, base)
        return self._retention_headers(_json(202, body), entry)

    def _context_running_body(self, entry: Continuation, progress: int, base: str) -> dict:
        """Rapid7's ContextContinueResponse: logs, leql (statement null), progress, id, empty
        events, the Self link."""
        context = entry.context
        assert context is not None
        return {
            "logs": [context.log_id],
            "leql": {"statement": None, "during": {"from": context.ts, "to": context.ts}},
            "progress": progress,
            "id": entry.id,
            "events": [],
            "links": [{"rel": self.rels()["Self"], "href": self._self_href(entry, base)}],
        }

    def _context_entries(
        self, context: ContextSpec
    ) -> tuple[list[Event], Event, list[Event], bool, bool] | None:
        """(entries before, newest first; the entry; entries after; more before; more after),
        as many as the page needs, or None when the entry is not in the log (or not visible).

        Entries are the log's, in (timestamp, sequence number) order, chained while two
        neighbours are at most 60 s apart (Rapid7's gap rule); one extra entry each way tells
        whether a Prev/Next link is due. Scans are bounded: N entries span at most N * 60 s."""
        now, late = self.now_ms(), self.options.late_arrival_seconds
        horizon = self.horizon_ms(now)
        ts, seq = context.ts, context.seq
        need = context.per_page + 1
        reach = need * CONTEXT_GAP_MS + 1
        base_spec = self._spec(
            (context.log_index,),
            "",
            from_ms=max(0, ts - reach),
            to_ms=ts + reach,
            per_page=context.per_page,
            mrf=False,
            from_inclusive=True,
            to_inclusive=False,
        )
        origin = None
        for event in iter_matching(
            self.data,
            dataclasses.replace(base_spec, lower=(ts, seq, -1), upper=(ts, seq + 1, -1)),
            now,
            late,
            horizon,
        ):
            origin = event
        if origin is None:
            return None

        def chain(spec: QuerySpec) -> tuple[list[Event], bool]:
            out: list[Event] = []
            previous = origin.ts
            for event in iter_matching(self.data, spec, now, late, horizon):
                if abs(event.ts - previous) > CONTEXT_GAP_MS:
                    break
                out.append(event)
                previous = event.ts
                if len(out) >= need:
                    break
            return out[: need - 1], len(out) >= need

        before, more_before = chain(
            dataclasses.replace(base_spec, upper=(ts, seq, -1), most_recent_first=True)
        )
        after, more_after = chain(dataclasses.replace(base_spec, lower=(ts, seq + 1, -1)))
        return before, origin, after, more_before, more_after

    def _context_page(self, context: ContextSpec, base: str) -> Response:
        """A finished Context page: BEFORE/AFTER give `per_page` entries before/after the entry
        (without it), SURROUND (per_page - 1) // 2 before, the entry, and the rest after; oldest
        first unless `most_recent_first`. `leql.during` holds the first and last timestamps of
        the page; `Prev`/`Next` (each a new Context query, BEFORE the page's first entry / AFTER
        its last) are there while the context goes on that way."""
        found = self._context_entries(context)
        if found is None:  # gone since it started (retention moved past it)
            raise ApiError(404, NOT_FOUND)
        before, origin, after, more_before, more_after = found
        per_page = context.per_page
        if context.context_type == "BEFORE":
            shown_before, shown_after = before[:per_page], []
            page = shown_before[::-1]
            has_prev = len(before) > per_page or more_before
            has_next = True  # the entry itself follows
        elif context.context_type == "AFTER":
            shown_after = after[:per_page]
            page = shown_after
            has_prev = True  # the entry itself precedes
            has_next = len(after) > per_page or more_after
        else:
            n_before = (per_page - 1) // 2
            shown_before = before[:n_before]
            shown_after = after[: per_page - 1 - len(shown_before)]
            page = [*shown_before[::-1], origin, *shown_after]
            has_prev = len(before) > len(shown_before) or more_before
            has_next = len(after) > len(shown_after) or more_after
        first = page[0] if page else origin
        last = page[-1] if page else origin
        links: list[tuple[str, str]] = []
        if has_prev:
            links.append(("Prev", self._context_href(context, first, "BEFORE", base)))
        if has_next:
            links.append(("Next", self._context_href(context, last, "AFTER", base)))
        spec = QuerySpec(
            (context.log_index,),
            (context.log_id,),
            parse_statement(""),
            first.ts,
            last.ts,
            per_page,
            context.most_recent_first,
            (first.ts, -1, -1),
            (last.ts + 1, -1, -1),
            kvp_info=context.kvp_info,
        )
        self._count("context_pages_served")
        body = render_page(
            spec,
            page[::-1] if context.most_recent_first else page,
            links,
            base,
            self.rels(),
            kvp_shape=self.options.kvp_shape,
            leql={"statement": None, "during": {"from": first.ts, "to": last.ts}},
        )
        return Response(200, body)

    @staticmethod
    def _context_href(context: ContextSpec, anchor: Event, kind: str, base: str) -> str:
        params: list[tuple[str, object]] = [
            ("per_page", context.per_page),
            ("timestamp", anchor.ts),
            ("log_keys", context.log_id),
            ("context_type", kind),
        ]
        if context.kvp_info:
            params.append(("kvp_info", "true"))
        if context.most_recent_first:
            params.append(("most_recent_first", "true"))
        return f"{base}/query/context/{anchor.seq}?" + urlencode(params)


def resolve_time_range(time_range: str, now_ms: int) -> tuple[int, int]:
    """Rapid7's relative `time_range` as (from, to) epoch ms at `now_ms` (400 if unsupported).

    `today`: from the start of the UTC day to now; `yesterday`: the whole previous UTC day;
    `last x units`: x units back from now (months and years on the calendar, the day clamped
    to the month's length)."""
    text = time_range.strip().lower()
    if text in ("today", "yesterday"):
        midnight = now_ms - now_ms % DAY_MS
        return (midnight, now_ms) if text == "today" else (midnight - DAY_MS, midnight)
    match = _TIME_RANGE.match(time_range)
    count = int(match["n"]) if match else 0
    if match is None or count < 1:
        raise _bad_request(
            INVALID_WINDOW_CODE,
            f"Unsupported time_range {time_range!r}: use 'today', 'yesterday' or 'last x "
            "min(s)|minute(s)|hr(s)|hour(s)|day(s)|week(s)|month(s)|year(s)' (x > 0)",
        )
    unit = match["unit"].lower().rstrip("s")
    if unit in ("month", "year"):
        months = count * (12 if unit == "year" else 1)
        now = datetime.fromtimestamp(now_ms // 1000, tz=UTC)
        total = now.year * 12 + now.month - 1 - months
        year, month = divmod(total, 12)
        if year < 1970:
            return 0, now_ms
        day = min(now.day, calendar.monthrange(year, month + 1)[1])
        start = now.replace(year=year, month=month + 1, day=day)
        return max(0, int(start.timestamp()) * 1000 + now_ms % 1000), now_ms
    return max(0, now_ms - count * _UNIT_MS[unit]), now_ms


def _is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or a `+json` type, parameters (charset) ignored."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _param(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None
