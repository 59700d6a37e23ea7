"""Label names for events: one ``/management/labels`` read per run, bounded look-ups per id.

Events carry their labels as ids (``[{"id": ..., "links": [{"rel": "Self", ...}]}]``); the
console shows names ("Out of order entry"). ``LabelNames`` reads the list once per run (shared
by the ``labels`` stream and every window reader, on every thread) and looks up an id the list
does not hold at ``/management/labels/{id}`` once per run, at most ``MAX_LABEL_LOOKUPS`` times:
a server that invents a new id per event cannot make the tap send a request per event. Every
request goes through ``LogSearchHttp.request`` and counts against the management budget.

A name is decoration, never identity, so label names never end a run on their own: a key that
may read logs but not labels (401/403), a server without the list (404) or an answer that is not
a label leaves names null with one WARNING. Only what fails every request (5xx or timeouts after
the retries) still fails the run, as it would on the next query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from plugin_io.log_events import log_event
from tap_rapid7.logsearch.http import LogSearchHttp

__all__ = ["LABELS_PATH", "MAX_LABEL_LOOKUPS", "LabelNames"]

LABELS_PATH = "/management/labels"
# Look-ups of ids missing from the list, per run. Rapid7's own labels are a handful; an account
# with more than this many unlisted ids in its events is a broken or hostile server.
MAX_LABEL_LOOKUPS = 100
# The key may read logs but not labels: no look-up can succeed either.
_REFUSED = (401, 403)

logger = logging.getLogger("tap_rapid7.logsearch")


class LabelNames:
    """Names of label ids, for the whole run; thread-safe (window readers run in threads)."""

    def __init__(self, http: LogSearchHttp, *, max_lookups: int = MAX_LABEL_LOOKUPS) -> None:
        self.http = http
        self.max_lookups = max_lookups
        self.lookups = 0  # requests to /management/labels/{id} so far
        self._lock = threading.Lock()
        self._listed: list[dict] | None = None  # the list as read, for the labels stream
        self._names: dict[str, str | None] = {}  # id -> name; None: known to have none
        self._refused = False  # 401/403: the key may not read labels
        self._capped = False  # the look-up bound was reached (warned once)

    def labels(self) -> list[dict]:
        """Every label ``/management/labels`` lists (read once per run); empty if unavailable."""
        with self._lock:
            return list(self._load())

    def names(self, label_ids: Sequence[Any]) -> list[str | None]:
        """The name of each id, in order; None where it cannot be had (warned once per id)."""
        if self._listed is None:
            with self._lock:
                self._load()
        names = self._names
        found: list[str | None] = []
        for label_id in label_ids:
            if not isinstance(label_id, str) or not label_id:
                found.append(None)  # nothing to ask for (a hostile id may not even hash)
            elif label_id in names:  # a dict read: safe while another thread adds an id
                found.append(names[label_id])
            else:
                with self._lock:
                    found.append(self._look_up(label_id))
        return found

    def _load(self) -> list[dict]:
        """The list, read on first use (under the lock)."""
        if self._listed is not None:
            return self._listed
        http = self.http
        reply = http.request(http.url(LABELS_PATH), what="label list")
        listed: list[dict] = []
        problem: str | None = None
        if reply.status_code in _REFUSED or reply.status_code == 404:
            self._refused = reply.status_code in _REFUSED
            problem = f"HTTP {reply.status_code}"
        else:
            http.raise_for_status(reply, "label list")
            items = reply.body.get("labels") if isinstance(reply.body, dict) else None
            if isinstance(items, list):
                listed = [item for item in items if isinstance(item, dict)]
            else:
                problem = "answer without a 'labels' list"
        if problem is not None:
            effect = (
                "label_names stay null, the labels stream is empty"
                if self._refused
                else "the labels stream is empty; ids are looked up one by one"
            )
            log_event(
                logger, logging.WARNING, "logsearch_labels_unavailable", path=LABELS_PATH,
                status_code=reply.status_code, problem=problem, effect=effect,
            )  # fmt: skip
        for item in listed:
            label_id, name = item.get("id"), item.get("name")
            if isinstance(label_id, str) and label_id:
                self._names[label_id] = name if isinstance(name, str) else None
        self._listed = listed
        return listed

    def _look_up(self, label_id: str) -> str | None:
        """One id the list did not hold (under the lock): asked once, within the bound."""
        if label_id in self._names:  # another thread asked meanwhile
            return self._names[label_id]
        if self._refused:
            return None
        if self.lookups >= self.max_lookups:
            if not self._capped:
                self._capped = True
                log_event(
                    logger, logging.WARNING, "logsearch_label_lookups_capped",
                    max_lookups=self.max_lookups, label_id=label_id,
                    effect="names of further unlisted label ids stay null this run",
                )  # fmt: skip
            return None
        self.lookups += 1
        http = self.http
        path = f"{LABELS_PATH}/{quote(label_id, safe='')}"
        reply = http.request(http.url(path), what="label lookup")
        name: str | None = None
        problem: str | None = None
        if reply.status_code in _REFUSED:
            self._refused = True
            problem = f"HTTP {reply.status_code}"
        elif reply.status_code == 404:
            problem = "HTTP 404"
        else:
            http.raise_for_status(reply, "label lookup")
            label = reply.body.get("label") if isinstance(reply.body, dict) else None
            name = label.get("name") if isinstance(label, dict) else None
            if not isinstance(name, str):
                name, problem = None, "answer without label.name"
        if problem is not None:
            log_event(
                logger, logging.WARNING, "logsearch_label_unknown", label_id=label_id,
                status_code=reply.status_code, problem=problem, effect="its name stays null",
            )  # fmt: skip
        self._names[label_id] = name
        return name
