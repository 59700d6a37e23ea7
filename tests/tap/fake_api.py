"""A tiny in-test Log Search fake for requests-mock: ordered events, paging by opaque Next links.

It is deliberately independent of the bundled emulator so tap-level state tests do not depend on
it; ``to_inclusive`` and ``polls`` reproduce the two server behaviours the tap must absorb.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qs, urlparse

BASE = "https://fake.logsearch"
# /management/labels as Rapid7's OpenAPI document shapes it
LABELS = [
    {"id": "00000000-0000-0000-0000-000000000006", "sn": 6, "name": "Out of order entry",
     "color": "e0e000", "reserved": True},
]  # fmt: skip


class FakeLogSearch:
    def __init__(
        self, events_by_log: dict[str, list[tuple[int, int]]], *, to_inclusive=False, polls=1
    ):
        self.events = {log: sorted(evs) for log, evs in events_by_log.items()}
        self.to_inclusive = to_inclusive
        self.polls = polls
        self.pending: dict[str, tuple[int, dict]] = {}
        self.counter = 0
        self.starts: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()  # the tap may query from several threads

    def install(self, requests_mock) -> None:
        requests_mock.get(re.compile(re.escape(BASE) + r"/query/logs/[^/?]+"), json=self._query)
        requests_mock.post(re.compile(re.escape(BASE) + r"/query/logs(\?.*)?$"), json=self._query)
        requests_mock.get(re.compile(re.escape(BASE) + r"/query/q-\d+"), json=self._poll)
        requests_mock.get(
            f"{BASE}/management/logs",
            json={"logs": [{"id": log, "name": log} for log in self.events]},
        )
        requests_mock.get(
            f"{BASE}/management/logsets",
            json={
                "logsets": [
                    {
                        "id": "set-1",
                        "name": "all",
                        "logs_info": [{"id": log} for log in self.events],
                    }
                ]
            },
        )

        requests_mock.get(f"{BASE}/management/labels", json={"labels": LABELS})

    def truth(self, log: str, from_ms: int, to_ms: int) -> list[tuple[int, int]]:
        return [e for e in self.events[log] if from_ms <= e[0] < to_ms]

    def _query(self, request, context):
        qs = parse_qs(urlparse(request.url).query)
        if request.method == "POST":  # several logs in one query: {"logs": [...], "leql": ...}
            payload = request.json()
            logs = list(payload["logs"])
            during = payload["leql"]["during"]
            from_ms, to_ms = int(during["from"]), int(during["to"])
        else:
            logs = [urlparse(request.url).path.rsplit("/", 1)[1]]
            from_ms, to_ms = int(qs["from"][0]), int(qs["to"][0])
        offset = int(qs.get("offset", ["0"])[0])
        per_page = int(qs["per_page"][0])
        if offset == 0:
            with self._lock:
                self.starts.append((":".join(logs), from_ms, to_ms))
        selected = sorted(
            (e[0], e[1], log)
            for log in logs
            for e in self.events[log]
            if from_ms <= e[0] and (e[0] <= to_ms if self.to_inclusive else e[0] < to_ms)
        )
        chunk = selected[offset : offset + per_page]
        body: dict = {
            "logs": logs,
            "events": [
                {"timestamp": ts, "sequence_number": seq, "sequence_number_str": str(seq),
                 "log_id": log, "message": f"{log} {ts} {seq}", "labels": []}
                for ts, seq, log in chunk
            ],
        }  # fmt: skip
        if offset + per_page < len(selected):
            nxt = (
                f"{BASE}/query/logs/{':'.join(logs)}?from={from_ms}&to={to_ms}&per_page={per_page}"
            )
            body["links"] = [{"rel": "Next", "href": f"{nxt}&offset={offset + per_page}"}]
        if self.polls:
            with self._lock:
                self.counter += 1
                qid = f"q-{self.counter}"
                self.pending[qid] = (self.polls, body)
            context.status_code = 202
            return {
                "progress": 0,
                "events": [],
                "links": [{"rel": "Self", "href": f"{BASE}/query/{qid}"}],
            }
        return body

    def _poll(self, request, context):
        qid = urlparse(request.url).path.rsplit("/", 1)[1]
        with self._lock:
            left, body = self.pending[qid]
            if left > 1:
                self.pending[qid] = (left - 1, body)
        if left > 1:
            return {"progress": 50, "events": [], "links": [{"rel": "Self", "href": request.url}]}
        return body
