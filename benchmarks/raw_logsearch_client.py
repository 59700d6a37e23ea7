"""A plain Log Search client: ``requests`` + msgspec, the baseline for the tap benchmarks.

It does what Rapid7's own clients do and nothing more: for each log in turn, start the query for
the window, poll its Self link every ``poll_interval`` seconds while it runs, take the events of
each finished page, follow Next until there is none. Each event goes out as one JSON line (a
Singer-like RECORD, encoded with msgspec), so it does the minimum a tap must do: fetch, decode,
write. No state, no schema, no retries except waiting out a 429: on any other HTTP error it
stops.

Used as a process by tap_cpu.py:
``python benchmarks/raw_logsearch_client.py --base-url U --api-key K --log-id ID --from-ms F
--to-ms T [--per-page 500] [--poll-interval 0] > /dev/null``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgspec
import requests


@dataclass
class PullResult:
    """What one pull fetched: events, pages, requests sent (starts + polls + Next)."""

    events: int = 0
    pages: int = 0
    requests: int = 0


def _link(body: dict[str, Any], rel: str) -> str | None:
    """The href of the link named ``rel`` (case-insensitive), if any."""
    for link in body.get("links") or ():
        if str(link.get("rel", "")).lower() == rel:
            return link.get("href")
    return None


def pull(
    *,
    base_url: str,
    api_key: str,
    log_ids: Sequence[str],
    from_ms: int,
    to_ms: int,
    per_page: int = 500,
    poll_interval: float = 1.0,
    out: BinaryIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PullResult:
    """Pull ``[from_ms, to_ms)`` of each log, one log after another; write events to ``out``."""
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    result = PullResult()
    with requests.Session() as session:
        session.headers["X-Api-Key"] = api_key

        def get(url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
            response = session.get(url, params=params, timeout=60)
            result.requests += 1
            while response.status_code == 429:  # rate limited: wait as told, then again
                sleep(float(response.headers.get("Retry-After") or 1))
                response = session.get(url, params=params, timeout=60)
                result.requests += 1
            if response.status_code >= 400:
                raise RuntimeError(f"GET {url} -> {response.status_code}: {response.text[:200]}")
            return decode(response.content)

        for log_id in log_ids:
            params = {"from": from_ms, "to": to_ms, "per_page": per_page}
            body = get(f"{base_url}/query/logs/{log_id}", params)
            while True:
                self_href = _link(body, "self")
                if self_href is not None:  # still running: poll
                    if poll_interval:
                        sleep(poll_interval)
                    body = get(self_href)
                    continue
                result.pages += 1
                events = body.get("events") or []
                result.events += len(events)
                if out is not None and events:
                    out.write(
                        b"".join(
                            encode({"type": "RECORD", "stream": "events", "record": event}) + b"\n"
                            for event in events
                        )
                    )
                next_href = _link(body, "next")
                if next_href is None:
                    break
                body = get(next_href)
    return result


def main() -> None:
    """Command line entry point (see the module docstring); prints a summary on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--log-id", action="append", required=True, dest="log_ids")
    parser.add_argument("--from-ms", type=int, required=True)
    parser.add_argument("--to-ms", type=int, required=True)
    parser.add_argument("--per-page", type=int, default=500)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    result = pull(
        base_url=args.base_url,
        api_key=args.api_key,
        log_ids=args.log_ids,
        from_ms=args.from_ms,
        to_ms=args.to_ms,
        per_page=args.per_page,
        poll_interval=args.poll_interval,
        out=sys.stdout.buffer,
    )
    sys.stdout.flush()
    print(
        f"raw_client events={result.events} pages={result.pages} requests={result.requests}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
