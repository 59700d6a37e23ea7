"""A deliberately plain `requests` client for the Log Search API, written for the tests.

It knows only what the spec says: start a query, poll the Self link while the body has one,
follow Next links (each one a new query), retry 5xx/429/dropped connections on the same URL at
once (tests never sleep), and ask the same URL again when a finished 200 carries no page (no
`events` list). It shares no code with the emulator, so agreeing with its ground truth means
something. Keys are Rapid7's entry identity: (log_id, timestamp, sequence_number_str).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

RETRY_STATUSES = {429, 500, 502, 503}


@dataclass
class PullResult:
    keys: list[tuple[str, int, str]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    pages: int = 0
    polls: int = 0
    retries: int = 0
    non_pages: int = 0  # finished 200 bodies without an `events` list, asked again
    starts: int = 0  # answered requests to a query-start URL (the first one or a Next)
    statuses: list[int] = field(default_factory=list)
    next_hrefs: list[str] = field(default_factory=list)
    repeated_next: int = 0
    beyond_retention: list[bool] = field(default_factory=list)  # per finished page


def _links(body: dict) -> dict[str, str]:
    return {link["rel"].lower(): link["href"] for link in body.get("links") or []}


def _get(
    session: requests.Session, result: PullResult, url: str, max_attempts: int = 50, **kwargs
) -> requests.Response:
    """GET with retries on 5xx, 429 and dropped connections (no real waiting: tests)."""
    for _ in range(max_attempts):
        try:
            response = session.get(url, timeout=10, **kwargs)
        except requests.ConnectionError:
            result.retries += 1
            continue
        result.statuses.append(response.status_code)
        if response.status_code in RETRY_STATUSES:
            result.retries += 1
            continue
        response.raise_for_status()
        return response
    raise AssertionError(f"gave up on {url} after {max_attempts} attempts")


def _finished_page(
    session: requests.Session, result: PullResult, url: str, params: dict | None, max_polls: int
) -> requests.Response:
    """Start a query at `url` and poll it until a 200 carries a page (an `events` list)."""
    start = True
    while True:
        response = _get(session, result, url, params=params)
        result.starts += start
        body = response.json()
        links = _links(body)
        if "self" in links:
            result.polls += 1
            assert result.polls <= max_polls, "query never finished"
            url, params, start = links["self"], None, False
            continue
        if not isinstance(body.get("events"), list):
            result.non_pages += 1  # ask the same URL again
            assert result.non_pages <= max_polls, "no page ever came"
            continue
        return response


def pull(base_url: str, api_key: str, path: str, params: dict, max_polls: int = 100) -> PullResult:
    """Pull every page of one query; returns keys in the order served."""
    session = requests.Session()
    session.headers["X-Api-Key"] = api_key
    result = PullResult()
    url: str = base_url + path
    query: dict | None = params
    seen_next: set[str] = set()
    try:
        while True:
            response = _finished_page(session, result, url, query, max_polls)
            body = response.json()
            result.pages += 1
            result.beyond_retention.append(
                response.headers.get("x-beyond-retention", "").lower() == "true"
            )
            for event in body["events"]:
                result.events.append(event)
                result.keys.append(
                    (event["log_id"], event["timestamp"], event["sequence_number_str"])
                )
            links = _links(body)
            if "next" not in links:
                return result
            href = links["next"]
            result.next_hrefs.append(href)
            if href in seen_next:  # loop guard: a Next href that repeats twice is a loop
                result.repeated_next += 1
                assert result.repeated_next <= 1, f"Next link loop at {href}"
            seen_next.add(href)
            url, query = href, None
    finally:
        session.close()
