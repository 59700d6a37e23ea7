"""The tap's settings: declared once (``CONFIG_SCHEMA``), read once into ``TapSettings``.

The JSON Schema is what the SDK validates, what ``--about`` prints and what the README's
settings table is generated from. ``TapSettings`` is the typed view every part of the tap, and
the tools that read the tap's config (reconcile, capacity), use: numbers converted once (the SDK
hands JSON numbers over as ``Decimal``; environment variables arrive as text), defaults taken
from the schema, so no module converts or defaults a setting on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from singer_sdk import typing as th

from plugin_io.settings_types import SettingError, SettingTypes
from tap_rapid7.config_dates import ACCEPTED_FORMATS
from tap_rapid7.logsearch.http import DEFAULT_MAX_RESPONSE_BYTES
from tap_rapid7.logsearch.records import MAX_MESSAGE_BYTES, OVERSIZED_MESSAGES

__all__ = [
    "CONFIG_SCHEMA",
    "ENV_PREFIX",
    "REGIONS",
    "SettingError",
    "TapSettings",
    "config_from_env",
]

REGIONS = ("us", "us2", "us3", "eu", "ca", "au", "ap")
ENV_PREFIX = "TAP_RAPID7_"  # Meltano's (and the SDK's --config=ENV) names: TAP_RAPID7_<SETTING>


CONFIG_SCHEMA: dict[str, Any] = th.PropertiesList(
    th.Property(
        "api_key", th.StringType(nullable=False), required=True, secret=True,
        description="Rapid7 Insight platform API key, sent as X-Api-Key",
    ),
    th.Property(
        "region", th.StringType, default="us", allowed_values=list(REGIONS),
        description=(
            "Picks https://{region}.rest.logs.insight.rapid7.com; one of "
            + ", ".join(REGIONS)
        ),
    ),
    th.Property(
        "base_url", th.StringType,
        description="Overrides the region URL (the emulator, a proxy)",
    ),
    th.Property(
        "log_ids", th.ArrayType(th.StringType),
        description="Logs to read; empty means every log /management/logs lists",
    ),
    th.Property(
        "logsets", th.ArrayType(th.StringType), title="Log Sets",
        description=(
            "Log sets to read, by name (exact, case-sensitive) or id, resolved each run "
            "through /management/logsets; their logs are added to log_ids"
        ),
    ),
    th.Property(
        "query", th.StringType,
        description="LEQL statement applied to every window, e.g. where(...)",
    ),
    th.Property(
        "kvp_info", th.BooleanType, default=False, title="KVP Info",
        description=(
            "Ask Rapid7 for the key/value pairs it parsed from each entry (kvp_info=true) "
            "and keep them as the column kvp, a list of {key, value} texts"
        ),
    ),
    th.Property(
        "event_time_fields", th.ArrayType(th.StringType),
        description=(
            "Where the event's own time is in the message, tried in order: JSON keys, "
            "dotted paths, or re:<regex> with a group. Fills event_time (null if absent)"
        ),
    ),
    th.Property(
        "event_time_zone", th.StringType, default="UTC",
        description=(
            "IANA time zone (e.g. Europe/Berlin) of event times written without an offset; "
            "times with an offset, and epoch numbers, are unaffected"
        ),
    ),
    th.Property(
        "start_date", th.DateTimeType,
        description=(
            "Where the first sync starts (required without state): " + ACCEPTED_FORMATS
        ),
    ),
    th.Property(
        "end_date", th.DateTimeType,
        description=(
            "Where a sync stops, exclusive (default: now - lag_seconds); same formats "
            "as start_date"
        ),
    ),
    th.Property(
        "lag_seconds", th.NumberType, default=300,
        description="Stay this far behind now, so windows are complete when read",
    ),
    th.Property(
        "window_seconds", th.NumberType, default=86400,
        description=(
            "Longest time one query covers: longer windows cost fewer queries (each ends "
            "with a partial page)"
        ),
    ),
    th.Property(
        "logs_per_query", th.IntegerType, default=20,
        description=(
            "Logs read together in one query per window (quiet logs share a query; a busy "
            "one goes on alone). 1 = one query per log"
        ),
    ),
    th.Property(
        "budget_window_seconds", th.NumberType, default=900,
        description="Rapid7's budget window (15 minutes): pacing spreads each budget over it",
    ),
    th.Property(
        "budget_reserve_share", th.NumberType, default=0.05,
        description=(
            "Share of each budget left for other users of the key (jobs, console, reconcile)"
        ),
    ),
    th.Property(
        "budget_log_interval_seconds", th.NumberType, default=60,
        description="How often a logsearch_budget line reports what is spent and left",
    ),
    th.Property(
        "link_lifetime_seconds", th.NumberType, default=20,
        description=(
            "A query's Self link expires when not polled this long (Rapid7: 20 s); "
            "poll_interval_max_seconds must be below"
        ),
    ),
    th.Property("per_page", th.IntegerType, default=500, description="Events per page, 1..500"),
    th.Property(
        "poll_interval_seconds", th.NumberType, default=1.0,
        description="First wait between polls of a running query; doubles up to the max",
    ),
    th.Property(
        "poll_interval_max_seconds", th.NumberType, default=5.0,
        description="Longest wait between two polls",
    ),
    th.Property(
        "poll_timeout_seconds", th.NumberType, default=600,
        description=(
            "Longest one query may run: then it restarts from the cursor once; a second "
            "time in a row fails the run"
        ),
    ),
    th.Property(
        "max_retries", th.IntegerType, default=8,
        description=(
            "Retries of one request on 429, 5xx, timeouts and dropped connections (a "
            "connection that cannot be made: 2 quick retries at most; TLS and unknown-host "
            "errors: none)"
        ),
    ),
    th.Property(
        "backoff_base_seconds", th.NumberType, default=1.0,
        description="First retry wait (doubles each retry) when the server names none",
    ),
    th.Property(
        "backoff_max_seconds", th.NumberType, default=60,
        description="Longest backoff wait between retries",
    ),
    th.Property(
        "request_timeout_seconds", th.NumberType, default=60,
        description=(
            "Longest time one request may take, the whole answer included (connect, headers, "
            "body): a slower answer is cut and retried"
        ),
    ),
    th.Property(
        "max_response_bytes", th.IntegerType, default=DEFAULT_MAX_RESPONSE_BYTES,
        description=(
            "Largest answer body accepted, on the wire and decoded (256 MiB; a full page is far "
            "smaller): a larger one, or a gzip bomb, fails the run instead of exhausting memory"
        ),
    ),
    th.Property(
        "max_message_bytes", th.IntegerType, default=MAX_MESSAGE_BYTES,
        description=(
            "Largest event message kept whole, in UTF-8 bytes (1 MiB; at least 1024): a larger "
            "one is handled as oversized_messages says"
        ),
    ),
    th.Property(
        "oversized_messages", th.StringType, default=OVERSIZED_MESSAGES[0],
        allowed_values=list(OVERSIZED_MESSAGES),
        description=(
            "A message above max_message_bytes: truncate (cut to the limit, ending with a "
            "marker saying so; WARNING logsearch_message_truncated) or fail (the run stops "
            "naming the event)"
        ),
    ),
    th.Property(
        "max_restarts", th.IntegerType, default=5,
        description="Restarts of one window (expired link, poll timeout) before failing",
    ),
    th.Property(
        "state_every_records", th.IntegerType, default=10000,
        description="Also emit STATE every this many records (besides after each window)",
    ),
    th.Property(
        "max_concurrent_queries", th.IntegerType, default=4,
        description="Queries in flight at once (logs and next windows); 1 = sequential",
    ),
).to_dict()  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TapSettings:
    """Every tap setting, typed; defaults are ``CONFIG_SCHEMA``'s (a test keeps them equal)."""

    api_key: str = dataclasses.field(repr=False)  # a repr (a log, a traceback) never shows it
    region: str = "us"
    base_url: str | None = None
    log_ids: tuple[str, ...] = ()
    logsets: tuple[str, ...] = ()
    query: str | None = None
    kvp_info: bool = False
    event_time_fields: tuple[str, ...] = ()
    event_time_zone: str = "UTC"
    start_date: str | None = None
    end_date: str | None = None
    lag_seconds: float = 300.0
    window_seconds: float = 86400.0
    logs_per_query: int = 20
    budget_window_seconds: float = 900.0
    budget_reserve_share: float = 0.05
    budget_log_interval_seconds: float = 60.0
    link_lifetime_seconds: float = 20.0
    per_page: int = 500
    poll_interval_seconds: float = 1.0
    poll_interval_max_seconds: float = 5.0
    poll_timeout_seconds: float = 600.0
    max_retries: int = 8
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    request_timeout_seconds: float = 60.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    oversized_messages: str = OVERSIZED_MESSAGES[0]
    max_restarts: int = 5
    state_every_records: int = 10000
    max_concurrent_queries: int = 4

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TapSettings:
        """Typed settings from a config dict (unknown keys, e.g. Meltano's extras, ignored)."""
        values = _TYPES.values(config)
        if "api_key" not in values:
            values["api_key"] = ""
        return cls(**values)

    @property
    def logs(self) -> list[str]:
        """``log_ids`` without repeats, in the order given."""
        return list(dict.fromkeys(self.log_ids))


def numbers_from_text(config: Mapping[str, Any]) -> dict[str, Any]:
    """Number settings given as text (Meltano's kind-less settings), as numbers; booleans
    given as text (``"true"``, ``"false"``) as booleans."""
    return _TYPES.numbers_from_text(config)


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The tap's settings from ``TAP_RAPID7_*`` variables, typed by ``CONFIG_SCHEMA``.

    Arrays: a JSON array (as Meltano passes them), else comma-separated ``log_ids``;
    ``event_time_fields`` is a single entry when not JSON (a regex may hold commas); booleans
    are ``true``/``false`` (also ``1``/``0``, ``yes``/``no``).
    """
    return _TYPES.from_env(environ)


_TYPES = SettingTypes(
    CONFIG_SCHEMA,
    (field.name for field in dataclasses.fields(TapSettings)),
    env_prefix=ENV_PREFIX,
    single_entry={"event_time_fields"},
)
