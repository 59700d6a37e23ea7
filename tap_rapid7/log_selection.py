"""Which logs a run reads: ``log_ids``, the logs of ``logsets``, or every log when neither is set.

The one place for that rule. Log sets are what InsightIDR users think in ("Firewall", "Active
Directory"); they are resolved at the start of each run through ``/management/logsets``, so a
log added to a set is read from the next run on. The state stays per log: a log that leaves
every selected set keeps its cursor in the STATE and resumes there if it comes back.

Matching: an entry is a log set's id, else its name, exactly (case-sensitive, as the console
shows it; an entry that only differs in case is refused with the name it probably meant). A
name two log sets share is refused naming both ids: the id says which one is meant. Each run
logs one ``logsearch_logsets_resolved`` line: the sets, how many logs each holds, and the logs
added and removed relative to the per-log partitions of the STATE the run started from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from singer_sdk.exceptions import ConfigValidationError

from plugin_io.log_events import log_event
from tap_rapid7.logsearch.http import InvalidPageError

if TYPE_CHECKING:
    from tap_rapid7.logsearch import LogSearchClient
    from tap_rapid7.settings import TapSettings

__all__ = ["ResolvedLogset", "resolve_logsets", "select_logs", "state_log_ids"]

# Names listed in an "unknown log set" error, and log ids in the INFO line (counts are whole).
MAX_SHOWN = 20

logger = logging.getLogger("tap_rapid7.logsearch")  # with the other logsearch_* events


@dataclass(frozen=True)
class ResolvedLogset:
    """One entry of the ``logsets`` setting and the log set it names."""

    requested: str
    id: str
    name: str | None
    log_ids: tuple[str, ...]


def _shown(items: Sequence[str]) -> str:
    """Up to ``MAX_SHOWN`` items, quoted, and how many more."""
    text = ", ".join(repr(item) for item in items[:MAX_SHOWN])
    more = len(items) - MAX_SHOWN
    return f"{text} and {more} more" if more > 0 else text or "none"


def _listed_logsets(listing: Iterable[Mapping[str, Any]]) -> list[ResolvedLogset]:
    """Every log set of ``/management/logsets`` with its log ids; one without ids is an error."""
    logsets: list[ResolvedLogset] = []
    for index, logset in enumerate(listing):
        logset_id = logset.get("id")
        if not isinstance(logset_id, str) or not logset_id:
            msg = (
                f"Log Search /management/logsets sent log set {index} without a usable id "
                f"(field logsets[{index}].id: {logset_id!r}); check region/base_url"
            )
            raise InvalidPageError(msg)
        name = logset.get("name")
        logs_info = logset.get("logs_info") or []
        if not isinstance(logs_info, list):
            logs_info = [logs_info]
        log_ids: list[str] = []
        for position, log in enumerate(logs_info):
            log_id = log.get("id") if isinstance(log, Mapping) else None
            if not isinstance(log_id, str) or not log_id:
                msg = (
                    f"Log Search /management/logsets sent log set {logset_id!r} with a log "
                    f"without a usable id (field logsets[{index}].logs_info[{position}].id: "
                    f"{log_id!r})"
                )
                raise InvalidPageError(msg)
            log_ids.append(log_id)
        logsets.append(
            ResolvedLogset("", logset_id, name if isinstance(name, str) else None, tuple(log_ids))
        )
    return logsets


def resolve_logsets(
    requested: Sequence[str], listing: Iterable[Mapping[str, Any]]
) -> list[ResolvedLogset]:
    """The log set each entry of the ``logsets`` setting names (repeats once, in order).

    Raises ``ConfigValidationError`` (one line naming the entry) for an unknown entry or a name
    two log sets share.
    """
    logsets = _listed_logsets(listing)
    by_id = {logset.id: logset for logset in logsets}
    by_name: dict[str, list[ResolvedLogset]] = {}
    for logset in logsets:
        if logset.name is not None:
            by_name.setdefault(logset.name, []).append(logset)
    resolved: list[ResolvedLogset] = []
    for entry in dict.fromkeys(requested):
        found = by_id.get(entry)
        if found is None:
            named = by_name.get(entry, [])
            if len(named) > 1:
                ids = ", ".join(logset.id for logset in named)
                msg = (
                    f"setting logsets: the name {entry!r} matches {len(named)} log sets (ids "
                    f"{ids}); give the id of the one meant"
                )
                raise ConfigValidationError(msg, errors=[msg])
            if not named:
                raise _unknown(entry, sorted(by_name))
            found = named[0]
        resolved.append(ResolvedLogset(entry, found.id, found.name, found.log_ids))
    return resolved


def _unknown(entry: str, names: list[str]) -> ConfigValidationError:
    folded = [name for name in names if name.casefold() == entry.casefold()]
    hint = f" (names match exactly: did you mean {folded[0]!r}?)" if folded else ""
    msg = (
        f"setting logsets: no log set has the name or id {entry!r}{hint}; "
        f"/management/logsets lists {len(names)} names: {_shown(names)}"
    )
    return ConfigValidationError(msg, errors=[msg])


def state_log_ids(state: Mapping[str, Any], stream: str = "events") -> list[str]:
    """The logs that have a partition in ``stream``'s bookmark of ``state`` (in its order)."""
    bookmark = state.get("bookmarks", {}).get(stream, {})
    partitions = bookmark.get("partitions", []) if isinstance(bookmark, Mapping) else []
    ids: list[str] = []
    for partition in partitions if isinstance(partitions, list) else []:
        context = partition.get("context") if isinstance(partition, Mapping) else None
        log_id = context.get("log_id") if isinstance(context, Mapping) else None
        if isinstance(log_id, str):
            ids.append(log_id)
    return ids


def select_logs(
    settings: TapSettings, client: LogSearchClient, previous: Sequence[str] = ()
) -> list[str]:
    """The logs this run reads, in order: ``log_ids``, then the logs of each of ``logsets``.

    Neither set: every log ``/management/logs`` lists. ``previous`` are the logs the incoming
    STATE holds partitions for: the INFO line says which logs joined or left relative to them.
    """
    explicit = settings.logs
    if not settings.logsets:
        return explicit or client.list_log_ids()
    resolved = resolve_logsets(settings.logsets, client.list_logsets())
    selected = list(dict.fromkeys([*explicit, *(i for r in resolved for i in r.log_ids)]))
    chosen, known = set(selected), set(previous)
    added = [log_id for log_id in selected if log_id not in known]
    removed = [log_id for log_id in dict.fromkeys(previous) if log_id not in chosen]
    log_event(
        logger, logging.INFO, "logsearch_logsets_resolved",
        logsets=[r.name if r.name is not None else r.id for r in resolved],
        logset_ids=[r.id for r in resolved], logset_logs=[len(r.log_ids) for r in resolved],
        log_ids_setting=len(explicit), logs=len(selected), added_count=len(added),
        added=added[:MAX_SHOWN], removed_count=len(removed), removed=removed[:MAX_SHOWN],
    )  # fmt: skip
    for r in resolved:
        if not r.log_ids:
            log_event(
                logger, logging.WARNING, "logsearch_logset_empty", logset=r.requested,
                logset_id=r.id, effect="no log is read for this log set",
            )  # fmt: skip
    return selected
