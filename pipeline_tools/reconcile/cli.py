"""`tap-rapid7-reconcile`: does the dataset hold exactly what the Log Search API counts?

For each log and each time window (hourly by default) it asks the API for a `calculate(count)`
over that window, reads the dataset's rows and distinct keys for the same window, and reports
duplicates, missing events, extra keys and rows outside the checked range, naming the parts and
windows at fault. An entry is `(log_id, timestamp, sequence_number)` everywhere (sequence numbers
repeat across milliseconds). Exit status: 0 when everything matches, 1 on any mismatch, 2 when
the check itself could not run (bad arguments, API error, or a dataset that cannot be read as it
stands: a part or column that cannot be read or decoded, a column of another type than the
target writes, a symbolic link that would make a directory count twice; `dataset.DatasetError`).
Each of those is one line on stderr, naming the part or path and the cause; nothing is counted
around a damaged part, so a damaged dataset never gives 0.

With `--clocks` (and always in `--json`) it also counts each window by the event's own
`event_time`, the clock consoles and SIEM searches filter on, next to the receipt time the API
counts by: that is the "402 in the console, 18,957 from the API" question.

It takes the same settings as the tap (`--config tap.json`, or `--config ENV` for
`TAP_RAPID7_*` variables, which is what `meltano invoke tap-rapid7:reconcile` provides).

`--dataset` may also be the `output_dir` of `table_format: iceberg`: the stream's Iceberg table
is then read at one snapshot through pyiceberg (`iceberg_source.py`; `--table-format`, found by
itself when the directory holds the target's `catalog.db`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline_tools.reconcile.dataset import (
    DatasetError,
    StreamDir,
    read_dataset_counts,
    read_event_clocks,
    read_log_ids,
    window_start,
)
from pipeline_tools.reconcile.iceberg_source import (
    IcebergSource,
    IcebergSourceError,
    catalog_setting,
    detect_table_format,
)
from pipeline_tools.reconcile.report import Report, WindowResult, render_json, render_table
from plugin_io.log_events import add_log_level_argument, redact
from tap_rapid7.logsearch.records import EVENTS_STREAM
from tap_rapid7.settings import SettingError, TapSettings, config_from_env
from tap_rapid7.windows import iso_to_millis
from target_parquet_parts.naming import sanitize_stream_name
from target_parquet_parts.storage import UnsupportedOutputDirError

logger = logging.getLogger("tap-rapid7-reconcile")

__all__ = ["Counter", "load_config", "main", "parse_duration", "parse_time", "reconcile"]

# (log_id, from_ms, to_ms) -> number of events the API holds in [from_ms, to_ms).
Counter = Callable[[str, int, int], int]
# (log_id, from_ms, to_ms) -> {(timestamp, sequence_number_str)} of the API's events there: the
# entry's identity within one log (a sequence number alone repeats across milliseconds).
KeyLister = Callable[[str, int, int], set[tuple[int, str]]]
MAX_LISTED_KEYS = 20
LATE_AFTER_DEFAULT = "60s"
LATE_MARGIN_DEFAULT = "1h"

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(Exception):
    """Bad arguments or settings: reported in one line, exit status 2."""


def parse_time(text: str) -> int:
    """Epoch milliseconds from an integer (epoch ms) or an ISO 8601 time (no zone means UTC).

    The tap's own integer conversion (`iso_to_millis`): going through a float timestamp put
    about 0.6% of millisecond times one millisecond early (`...47.472Z` became `...47.471Z`),
    and a window edge one millisecond off moves whole bursts of entries to the next window.
    """
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return iso_to_millis(text)
    except ValueError as exc:
        raise UsageError(f"not an ISO 8601 time or epoch milliseconds: {text!r}") from exc


def parse_duration(text: str, option: str = "--window", *, allow_zero: bool = False) -> int:
    """A length in milliseconds from `3600`, `90s`, `15m`, `1h` or `1d` (`option` names it)."""
    match = _DURATION.match(text.strip().lower())
    if not match or (int(match.group(1)) == 0 and not allow_zero):
        raise UsageError(f"{option} must look like 1h, 15m, 1d or seconds, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)] * 1000


def load_config(sources: Iterable[str], environ: Mapping[str, str] | None = None) -> TapSettings:
    """The tap's settings from JSON files and/or `ENV` (`TAP_RAPID7_*`), later wins, typed."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    try:
        for source in sources:
            if source == "ENV":
                config.update(config_from_env(environ))
                continue
            try:
                loaded = json.loads(Path(source).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise UsageError(f"--config {source}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise UsageError(f"--config {source}: expected a JSON object")
            config.update(loaded)
        return TapSettings.from_config(config)
    except SettingError as exc:
        raise UsageError(str(exc)) from exc


def _windows(from_ms: int, to_ms: int, window_ms: int) -> list[tuple[int, int]]:
    """Aligned windows clipped to `[from_ms, to_ms)` (the first and last may be partial)."""
    spans = []
    start = window_start(from_ms, window_ms)
    while start < to_ms:
        spans.append((max(start, from_ms), min(start + window_ms, to_ms)))
        start += window_ms
    return spans


def reconcile(
    dataset: str | Path,
    counter: Counter,
    *,
    log_ids: list[str] | None,
    from_ms: int | None,
    to_ms: int | None,
    window_ms: int,
    stream: str = EVENTS_STREAM,
    api: str = "",
    subset: bool = False,
    concurrency: int = 2,
    key_lister: KeyLister | None = None,
    clocks: bool = False,
    late_after_ms: int = 60_000,
    late_margin_ms: int = 3_600_000,
    iceberg: IcebergSource | None = None,
) -> Report:
    """Compare the API's counts with the dataset for every (log, window) in the range.

    `log_ids` None means every log in the dataset (the CLI adds the API's logs). A range bound
    of None is taken from the dataset's own first/last row. `clocks` adds the same windows
    counted by event time (`Report.clocks`); it never changes whether the report is ok.
    `iceberg`: the dataset is that Iceberg table (its data files count as the parts).
    """
    stream_dir = _stream_dir(dataset, stream)
    if iceberg is None and not stream_dir.is_dir():
        raise UsageError(f"--dataset {dataset}: no {stream}/ directory (is it the output_dir?)")
    wanted = set(log_ids) if log_ids else None
    if iceberg is not None:
        counts = iceberg.counts(
            from_ms=from_ms, to_ms=to_ms, window_ms=window_ms, log_ids=wanted, subset=subset
        )
    else:
        counts = read_dataset_counts(
            stream_dir, from_ms=from_ms, to_ms=to_ms, window_ms=window_ms,
            log_ids=wanted, subset=subset,
        )  # fmt: skip
    if from_ms is None or to_ms is None:
        if counts.min_timestamp is None or counts.max_timestamp is None:
            raise UsageError("the dataset is empty: pass --from and --to to check a range")
        from_ms = counts.min_timestamp if from_ms is None else from_ms
        to_ms = counts.max_timestamp + 1 if to_ms is None else to_ms
    if from_ms >= to_ms:
        raise UsageError(f"empty range: --from {from_ms} is not before --to {to_ms}")
    logs = sorted(set(log_ids) if log_ids else counts.log_ids)
    jobs = [(log_id, lo, hi) for log_id in logs for lo, hi in _windows(from_ms, to_ms, window_ms)]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        api_counts = list(pool.map(lambda job: counter(*job), jobs))
    report = Report(
        dataset=str(dataset), stream=stream, api=api, from_ms=from_ms, to_ms=to_ms,
        window_ms=window_ms, parts=counts.parts, subset=subset, strays=counts.strays,
        stray_samples=counts.stray_samples, duplicate_groups=counts.duplicate_groups,
        source=iceberg.description if iceberg is not None else "",
    )  # fmt: skip
    for (log_id, lo, hi), api_count in zip(jobs, api_counts, strict=True):
        seen = counts.windows.get((log_id, window_start(lo, window_ms)))
        report.windows.append(WindowResult(
            log_id=log_id, window_from=lo, window_to=hi, api_count=api_count,
            rows=seen.rows if seen else 0, distinct=seen.distinct if seen else 0,
        ))  # fmt: skip
    if key_lister is not None:
        for window in report.windows:
            if window.missing or window.extra:
                _diff_keys(window, key_lister, counts.keys_in)
    if clocks and iceberg is not None:
        report.clocks = iceberg.clocks(
            from_ms=from_ms, to_ms=to_ms, window_ms=window_ms,
            log_ids=set(logs), late_after_ms=late_after_ms, margin_ms=late_margin_ms,
        )  # fmt: skip
    elif clocks:
        report.clocks = read_event_clocks(
            stream_dir, from_ms=from_ms, to_ms=to_ms, window_ms=window_ms,
            log_ids=set(logs), late_after_ms=late_after_ms, margin_ms=late_margin_ms,
        )  # fmt: skip
    return report


def _diff_keys(
    window: WindowResult,
    key_lister: KeyLister,
    dataset_keys: Callable[[str, int, int], set[tuple[int, str]]],
) -> None:
    """Name the keys behind a count difference: pull the window's keys from the API and compare.

    Keys are `(timestamp, sequence_number_str)` of the window's log. Costs one event query for
    the window (only windows that do not match get here).
    """
    api = key_lister(window.log_id, window.window_from, window.window_to)
    ours = dataset_keys(window.log_id, window.window_from, window.window_to)
    window.missing_keys = sorted(api - ours)[:MAX_LISTED_KEYS]
    window.extra_keys = sorted(ours - api)[:MAX_LISTED_KEYS]


def _client_counter(settings: TapSettings) -> tuple[Counter, Callable[[], list[str]], str]:
    """The tap's own client: `calculate(count)` polled to completion, same retries and auth."""
    client = _client(settings)
    statement = settings.query or None

    def count(log_id: str, from_ms: int, to_ms: int) -> int:
        return client.count(log_id, from_ms, to_ms, statement)

    def list_log_ids() -> list[str]:
        return [str(log["id"]) for log in client.list_logs() if log.get("id")]

    return count, list_log_ids, client.base_url


def _client_key_lister(settings: TapSettings) -> KeyLister:
    """The tap's own window reader (exact: half-open, deduplicated), keeping only the keys."""
    from tap_rapid7.windows import Window  # noqa: PLC0415

    client = _client(settings)
    statement = settings.query or None

    def list_keys(log_id: str, from_ms: int, to_ms: int) -> set[tuple[int, str]]:
        keys: set[tuple[int, str]] = set()
        for batch in client.read_window(log_id, Window(from_ms, to_ms), statement=statement):
            keys.update((r["timestamp"], r["sequence_number_str"]) for r in batch)
        return keys

    return list_keys


def _client(settings: TapSettings) -> Any:
    from tap_rapid7.logsearch import LogSearchClient  # noqa: PLC0415  (keeps --help fast)

    return LogSearchClient(settings)


def build_parser() -> argparse.ArgumentParser:
    """The command line (kept separate so the README can quote `--help`)."""
    parser = argparse.ArgumentParser(
        prog="tap-rapid7-reconcile",
        description="Compare Log Search API counts (calculate(count)) with a target-parquet-parts "
        "dataset, per log and time window. Exit 0 = match, 1 = mismatch, 2 = could not check "
        "(bad arguments, API error, or a damaged dataset: a part that cannot be read or decoded, "
        "a column of the wrong type, a symbolic link loop; one line naming the part or path).",
    )
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="FILE|ENV",
        help="the tap's settings (JSON file; ENV reads TAP_RAPID7_* variables); "
        "repeatable, later wins",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="the target's output_dir: a local directory or an object-store URI "
        "(s3://bucket/prefix, gs://..., az://...; credentials and endpoint from the "
        "environment, e.g. AWS_PROFILE, AWS_ENDPOINT_URL); holds events/part-*.parquet, or with "
        "table_format iceberg the catalog.db and the tables",
    )
    parser.add_argument(
        "--from",
        dest="from_",
        metavar="TIME",
        help="start, ISO 8601 or epoch ms (default: the dataset's first row)",
    )
    parser.add_argument(
        "--to",
        metavar="TIME",
        help="end, exclusive, ISO 8601 or epoch ms (default: after the last row)",
    )
    parser.add_argument(
        "--window", default="1h", help="window length: 1h (default), 15m, 1d, or seconds"
    )
    parser.add_argument(
        "--log-id",
        action="append",
        dest="log_ids",
        metavar="ID",
        help="check only this log (repeatable; default: the log_ids setting, "
        "else every log the API lists or the dataset holds)",
    )
    parser.add_argument(
        "--stream", default=EVENTS_STREAM, help=f"stream name (default: {EVENTS_STREAM})"
    )
    parser.add_argument(
        "--subset",
        action="store_true",
        help="the dataset may hold more than the range: ignore rows outside it",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="count queries run at once (default 2; mind the API's rate limit)",
    )
    parser.add_argument(
        "--list-keys",
        action="store_true",
        help="for windows that do not match, pull their events from the API and "
        "name the missing and extra keys (one event query per such window)",
    )
    parser.add_argument(
        "--clocks",
        action="store_true",
        help="also count each window by the event's own event_time (the clock "
        "consoles filter on) next to the receipt time the API counts by: rows "
        "by event time, without one, and arrived late or early (always in "
        "--json when the dataset has event_time)",
    )
    parser.add_argument(
        "--late-after",
        default=LATE_AFTER_DEFAULT,
        metavar="DURATION",
        help="with --clocks: an entry received more than this after its event "
        f"time arrived late (default {LATE_AFTER_DEFAULT}; 30s, 5m, 1h or seconds)",
    )
    parser.add_argument(
        "--late-margin",
        default=LATE_MARGIN_DEFAULT,
        metavar="DURATION",
        help="with --clocks: also read rows received this long before and after "
        "the range, so late arrivals count in their event-time window; later "
        f"ones are not seen (default {LATE_MARGIN_DEFAULT})",
    )
    parser.add_argument(
        "--table-format",
        choices=("auto", "parquet", "iceberg"),
        default="auto",
        help="what --dataset holds: plain parts, or the Iceberg table of table_format "
        "iceberg (default auto: iceberg when it holds catalog.db, or --iceberg-catalog is set)",
    )
    parser.add_argument(
        "--iceberg-namespace",
        default="singer",
        metavar="NAME",
        help="the target's iceberg_namespace (default singer); the table is NAME.STREAM",
    )
    parser.add_argument(
        "--iceberg-catalog",
        metavar="JSON|@FILE",
        help="the target's iceberg_catalog (pyiceberg catalog properties, JSON or @file); "
        "default: the embedded SQLite catalog DATASET/catalog.db",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_log_level_argument(parser, default="WARNING", more=" (the API key hidden)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `tap-rapid7-reconcile`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(args.log_level)
    settings: TapSettings | None = None
    iceberg: IcebergSource | None = None
    try:
        settings = load_config(args.config)
        iceberg = _open_iceberg(args)
        from_ms = parse_time(args.from_) if args.from_ else None
        to_ms = parse_time(args.to) if args.to else None
        window_ms = parse_duration(args.window)
        late_after_ms = parse_duration(args.late_after, "--late-after", allow_zero=True)
        late_margin_ms = parse_duration(args.late_margin, "--late-margin", allow_zero=True)
        counter, list_log_ids, api = _client_counter(settings)
        log_ids = args.log_ids or settings.logs
        if not log_ids:
            stream_dir = _stream_dir(args.dataset, args.stream)
            empty = not iceberg.data_files if iceberg is not None else not stream_dir.parts()
            if empty and (from_ms is None or to_ms is None):
                raise UsageError("the dataset is empty: pass --from and --to to check a range")
            log_ids = sorted(
                set(list_log_ids())
                | (iceberg.log_ids() if iceberg is not None else _dataset_log_ids(stream_dir))
            )
        report = reconcile(
            args.dataset, counter, log_ids=log_ids, from_ms=from_ms, to_ms=to_ms,
            window_ms=window_ms, stream=args.stream, api=api, subset=args.subset,
            concurrency=args.concurrency,
            key_lister=_client_key_lister(settings) if args.list_keys else None,
            clocks=args.clocks or args.json, late_after_ms=late_after_ms,
            late_margin_ms=late_margin_ms, iceberg=iceberg,
        )  # fmt: skip
    except (UsageError, IcebergSourceError) as exc:
        print(f"tap-rapid7-reconcile: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:  # a damaged part or layout: named, never counted around
        text = redact(str(exc), [settings.api_key if settings else None])
        print(f"tap-rapid7-reconcile: {text}", file=sys.stderr)
        return 2
    except Exception as exc:  # API or dataset failure: one clear line (never the key), exit 2
        secrets = [settings.api_key if settings else None]
        text = redact(f"{type(exc).__name__}: {exc}", secrets)
        hint = "" if args.log_level == "DEBUG" else " (--log-level DEBUG shows the traceback)"
        print(f"tap-rapid7-reconcile: could not check: {text}{hint}", file=sys.stderr)
        logger.debug("%s", redact(traceback.format_exc(), secrets))
        return 2
    finally:
        if iceberg is not None:
            iceberg.close()
    print(render_json(report) if args.json else render_table(report))
    return 0 if report.ok else 1


def _open_iceberg(args: argparse.Namespace) -> IcebergSource | None:
    """The stream's Iceberg table when --dataset holds one (--table-format), else None."""
    catalog = catalog_setting(args.iceberg_catalog)
    dataset = str(args.dataset)
    requested = "iceberg" if catalog and args.table_format == "auto" else args.table_format
    if detect_table_format(dataset, sanitize_stream_name(args.stream), requested) != "iceberg":
        return None
    return IcebergSource.open(
        dataset, stream=args.stream, namespace=args.iceberg_namespace, catalog=catalog
    )


def _stream_dir(dataset: str | Path, stream: str) -> StreamDir:
    """The stream's directory of `--dataset` (a local path or an object-store URI)."""
    try:
        return StreamDir.of(dataset, sanitize_stream_name(stream))
    except UnsupportedOutputDirError as exc:
        raise UsageError(f"--dataset: {exc}") from None


def _dataset_log_ids(stream_dir: StreamDir) -> set[str]:
    """Logs present in the dataset (so a log the API no longer lists is still checked)."""
    if not stream_dir.is_dir():
        return set()
    return read_log_ids(stream_dir)  # dictionary-encoded: a few bytes per row, not the ids


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
