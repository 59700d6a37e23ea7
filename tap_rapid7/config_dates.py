"""``start_date`` / ``end_date``: ISO 8601 or a few relative forms, checked before a sync starts.

Meltano turns relative ``date_iso8601`` values ("2 hours ago") into ISO 8601 itself (with the
``dateparser`` package); a tap run directly gets them as written. The tap accepts the common
relative forms too, so a config works the same both ways, and refuses anything else naming the
setting and the accepted formats.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ACCEPTED_FORMATS", "DATE_SETTINGS", "check_dates", "resolve_date"]

DATE_SETTINGS = ("start_date", "end_date")
ACCEPTED_FORMATS = (
    "ISO 8601 (2024-01-31, 2024-01-31T12:00:00Z, 2024-01-31T12:00:00+02:00; no offset = UTC), "
    "'now', or 'N seconds|minutes|hours|days|weeks ago' (optionally followed by UTC)"
)
_RELATIVE = re.compile(
    r"(?P<count>\d+)\s*(?P<unit>second|sec|minute|min|hour|day|week)s?\s+ago(?:\s+utc)?",
    re.IGNORECASE,
)
_UNIT_SECONDS = {
    "second": 1,
    "sec": 1,
    "minute": 60,
    "min": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
}


def resolve_date(name: str, value: Any, now: dt.datetime) -> dt.datetime:
    """The moment ``value`` of setting ``name`` means at ``now``; ValueError names the setting."""
    text = str(value).strip()
    if text.lower() in {"now", "now utc"}:
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative:
        seconds = int(relative["count"]) * _UNIT_SECONDS[relative["unit"].lower()]
        return now - dt.timedelta(seconds=seconds)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        msg = f"{name} {text!r} is not a date: use {ACCEPTED_FORMATS}"
        raise ValueError(msg) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def check_dates(config: Mapping[str, Any], now: dt.datetime) -> tuple[dict[str, str], list[str]]:
    """ISO 8601 values of the date settings set in ``config``, and what is wrong with them.

    Relative values are resolved against ``now``. Refused: an unparsable value, a
    ``start_date`` in the future and an ``end_date`` not after ``start_date`` (each would
    otherwise end the sync at once with nothing read and no word why).
    """
    resolved: dict[str, str] = {}
    moments: dict[str, dt.datetime] = {}
    errors: list[str] = []
    for name in DATE_SETTINGS:
        value = config.get(name)
        if value is None or value == "":
            continue
        try:
            moments[name] = resolve_date(name, value, now)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        resolved[name] = moments[name].isoformat()
    start, end = moments.get("start_date"), moments.get("end_date")
    given = {name: config.get(name) for name in DATE_SETTINGS}
    if start is not None and start > now:
        errors.append(
            f"start_date {given['start_date']!r} ({start.isoformat()}) is in the future "
            f"(now is {now.isoformat(timespec='seconds')}): nothing could be read"
        )
    if start is not None and end is not None and end <= start:
        errors.append(
            f"end_date {given['end_date']!r} ({end.isoformat()}) is not after start_date "
            f"{given['start_date']!r} ({start.isoformat()}): the sync window would be empty"
        )
    return resolved, errors
