"""Events per second the emulator serves to a plain `requests` loop.

Starts the emulator in this process (polls_before_ready=0 unless --polls, per_page 500), pulls
the same window several times over one keep-alive session and reports events/s, pages/s and the
median page latency (the last request of a page only).
Run: `.venv/bin/python benchmarks/emulator_throughput.py [--minutes 60] [--polls 2]`.
The first pass generates the data (cold); later passes are served from the bucket cache.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from logsearch_emulator import EmulatorOptions, running_emulator

NOW_MS = 1_714_564_800_000


def pull_window(
    session: requests.Session, base: str, log_id: str, from_ms: int, to_ms: int
) -> tuple[int, list[float]]:
    events, latencies = 0, []
    url, params = f"{base}/query/logs/{log_id}", {"from": from_ms, "to": to_ms, "per_page": 500}
    while url:
        started = time.perf_counter()
        response = session.get(url, params=params)
        response.raise_for_status()
        body = response.json()
        links = {link["rel"]: link["href"] for link in body.get("links", [])}
        if "Self" in links:  # still running: poll (no sleep, to measure the server)
            url, params = links["Self"], None
            continue
        latencies.append(time.perf_counter() - started)
        events += len(body["events"])
        url, params = links.get("Next"), None
    return events, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60, help="window length per pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--events-per-second", type=float, default=20.0)
    parser.add_argument("--polls", type=int, default=0, help="polls_before_ready")
    args = parser.parse_args()
    options = EmulatorOptions(
        polls_before_ready=args.polls, fixed_now_ms=NOW_MS, events_per_second=args.events_per_second
    )
    with running_emulator(options) as emu, requests.Session() as session:
        session.headers["X-Api-Key"] = emu.api_key
        from_ms = NOW_MS - 2 * 3_600_000
        to_ms = from_ms + args.minutes * 60_000
        for n in range(args.passes):
            started = time.perf_counter()
            events, latencies = pull_window(session, emu.base_url, emu.log_ids[0], from_ms, to_ms)
            elapsed = time.perf_counter() - started
            print(
                f"pass {n + 1} ({'cold' if n == 0 else 'warm'}): {events} events, "
                f"{len(latencies)} pages in {elapsed:.2f} s = {events / elapsed:,.0f} events/s, "
                f"{len(latencies) / elapsed:.0f} pages/s, median page "
                f"{statistics.median(latencies) * 1000:.1f} ms"
            )


if __name__ == "__main__":
    main()
