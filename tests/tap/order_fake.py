"""A requests-mock Log Search fake that serves each millisecond in an order the test chooses.

``FakeLogSearch`` sorts every log by ``(timestamp, sequence_number)``; Rapid7's spec promises no
such order inside one millisecond (§11), so this one serves the events exactly in the order
given (one log), pages them ``per_page`` at a time with opaque ``Next`` links, and records each
query start. A restarted or resumed query over the same range sees the same order.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

BASE = "https://order.logsearch"
LOG = "log-o"


class OrderedLogSearch:
    def __init__(self, served: list[tuple[int, int]]) -> None:
        self.served = list(served)  # server order: ascending timestamps, any order inside one
        self.starts: list[tuple[int, int]] = []

    def install(self, requests_mock) -> None:
        requests_mock.get(re.compile(re.escape(f"{BASE}/query/logs/{LOG}")), json=self._query)
        requests_mock.get(f"{BASE}/management/logs", json={"logs": [{"id": LOG, "name": LOG}]})
        requests_mock.get(f"{BASE}/management/logsets", json={"logsets": []})
        requests_mock.get(f"{BASE}/management/labels", json={"labels": []})

    def truth(self, from_ms: int, to_ms: int) -> set[tuple[int, int]]:
        return {e for e in self.served if from_ms <= e[0] < to_ms}

    def _query(self, request, context) -> dict:
        qs = parse_qs(urlparse(request.url).query)
        from_ms, to_ms, per_page = int(qs["from"][0]), int(qs["to"][0]), int(qs["per_page"][0])
        offset = int(qs.get("offset", ["0"])[0])
        if offset == 0:
            self.starts.append((from_ms, to_ms))
        selected = [e for e in self.served if from_ms <= e[0] < to_ms]
        chunk = selected[offset : offset + per_page]
        body: dict = {
            "logs": [LOG],
            "events": [
                {"timestamp": ts, "sequence_number": seq, "sequence_number_str": str(seq),
                 "log_id": LOG, "message": f"{ts} {seq}", "labels": []}
                for ts, seq in chunk
            ],
        }  # fmt: skip
        if offset + per_page < len(selected):
            href = (
                f"{BASE}/query/logs/{LOG}?from={from_ms}&to={to_ms}&per_page={per_page}"
                f"&offset={offset + per_page}"
            )
            body["links"] = [{"rel": "Next", "href": href}]
        return body
