"""The msgspec Singer reader with a tight read loop that numbers input lines.

Line numbers let every error name its line (malformed JSON, unknown message type, RECORD before
SCHEMA, a record that breaks its schema). An error a message handler raises without saying which
message caused it (a ``TypeError`` from a record that is an array, a ``KeyError`` naming only an
unknown stream, a ``RecursionError``, an ``OSError`` that would be logged as a bare errno) is
re-raised naming the line, the message type and the stream; the check costs nothing until
something fails. The loop replaces ``GenericSingerReader.process_lines``
(same callbacks, same counters) because the SDK loop costs about a microsecond per line in
helper calls (``assert_line_requires`` builds a set per line); at 100k+ lines/s that matters.

Stopping on a signal: the target's signal handler only calls ``request_stop``. If the main
thread is busy with a message (a flush, say) the request is noted and the loop stops after that
message; if it is waiting for input (its current frame is the read loop itself, blocked in the
read), the handler raises ``_StopReading`` there, which ends the loop between two messages. The
idle watcher is stopped (joined, so an idle flush in progress finishes) before ``process_lines``
returns, so nothing flushes concurrently with the shutdown that follows. When reading fails,
``on_failure`` (the target's ``release_after_failure``) runs after that and before the error
leaves ``process_lines``.
"""

from __future__ import annotations

import io
import sys
import threading
import typing as t
from collections import Counter, defaultdict
from types import FrameType

import msgspec
from singer_sdk.contrib.msgspec import decoder
from singer_sdk.exceptions import (
    InvalidRecord,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_parquet_parts.errors import DescribedOSError, describe_os_error
from target_parquet_parts.record_lines import RECORD_LINE_PREFIXES, record_line_stream
from target_parquet_parts.sdk_hooks import ReaderHooks
from target_parquet_parts.threads import leave_stop_signals_to_main_thread

__all__ = ["LineNumberingReader", "decode_line"]


def _excerpt(line: str | bytes, limit: int = 200) -> str:
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_JSON_TYPE = {
    str: "string",
    int: "integer",
    bool: "boolean",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}
# What each message type must hold: (field, Python type, what to call it in an error).
_SHAPES: dict[str, tuple[tuple[str, type, str], ...]] = {
    "SCHEMA": (("stream", str, "a string"), ("schema", dict, "a JSON object")),
    "RECORD": (("stream", str, "a string"), ("record", dict, "a JSON object")),
    "ACTIVATE_VERSION": (("stream", str, "a string"), ("version", int, "an integer")),
    "BATCH": (
        ("stream", str, "a string"),
        ("encoding", dict, "a JSON object"),
        ("manifest", list, "an array"),
    ),
}


def shape_problem(message: dict) -> str | None:
    """What makes ``message`` an ill-formed Singer message of its type, or None."""
    message_type = message.get("type")
    if message_type == "STATE":
        return None if "value" in message else "has no 'value'"
    for name, py_type, expected in _SHAPES.get(message_type, ()):  # type: ignore[arg-type]
        if name not in message:
            return f"has no {name!r}"
        value = message[name]
        if type(value) is not py_type:
            got = _JSON_TYPE.get(type(value), type(value).__name__)
            return f"{name!r} must be {expected}, got {got}"
    if message_type == "SCHEMA":
        if type(message["schema"].get("properties")) is not dict:
            return "'schema' must have 'properties' (a JSON object)"
        for name in ("key_properties", "bookmark_properties"):
            value = message.get(name)
            if value is not None and (
                type(value) is not list or any(type(v) is not str for v in value)
            ):
                return f"{name!r} must be an array of strings (or null)"
    return None


def decode_line(line: bytes | str, line_number: int | None) -> dict:
    """One input line as a Singer message, or an error naming the line and what is wrong."""
    try:
        message = decoder.decode(line)
    except msgspec.DecodeError as exc:
        msg = f"input line {line_number} is not valid JSON ({exc}): {_excerpt(line)}"
        raise InvalidInputLine(msg) from None
    except RecursionError:
        msg = (
            f"input line {line_number} is nested too deeply to decode (arrays or "
            f"objects beyond the decoder's recursion limit): {_excerpt(line)}"
        )
        raise InvalidInputLine(msg) from None
    if type(message) is not dict or type(message.get("type")) is not str:
        msg = (
            f"input line {line_number} is not a Singer message (a JSON object with "
            f"a string 'type'): {_excerpt(line)}"
        )
        raise InvalidInputLine(msg)
    return message


class LineNumberingReader(ReaderHooks):
    """``MsgSpecReader`` (msgspec decoding, floats as Decimal) plus a line counter.

    Reads standard input as bytes (msgspec decodes UTF-8 bytes directly; no text layer). Bad
    lines raise an error naming the line number and a short excerpt, instead of logging the
    whole (possibly huge) line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.line_bytes = 0  # size of the current line: what max_batch_bytes counts
        # Work to run while the input is idle (the target's STATE-lag check), every
        # ``idle_interval`` seconds, on a watcher thread. Messages and the idle work take
        # turns under one lock, so the target never sees two at once.
        self.idle_callback: t.Callable[[], None] | None = None
        self.idle_interval = 1.0
        self._turn = threading.Lock()
        self._watcher: _IdleWatcher | None = None
        self._idle_error: BaseException | None = None
        self.stop_signal: int | None = None
        # The target's line path: takes a RECORD line undecoded (True) or declines it.
        self.take_record_line: t.Callable[[bytes], bool] | None = None
        # Run when reading fails (a bad line, a handler's error): the target unlocks output_dir
        # there, since an in-process caller may keep the failed target alive.
        self.on_failure: t.Callable[[], None] | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Stop reading input (called from a signal handler, on the main thread).

        ``frame`` is the frame the signal interrupted. Only when that is the read loop's own
        frame (waiting for the next line, or between two messages) is the loop ended at once,
        by raising there; anywhere deeper (a message in progress) the loop ends after it.
        """
        if self.stop_signal is None:
            self.stop_signal = signum
        if frame is not None and frame.f_code is _READ_LOOP_CODE:
            raise _StopReading

    def wake(self) -> None:
        """Run the idle callback now rather than at the next interval (any thread; the
        target's part writer calls it when a part became durable, so a STATE waiting for it
        goes out while the tap is quiet). Without a watcher, a no-op."""
        watcher = self._watcher
        if watcher is not None:
            watcher.wake()

    @property
    def default_input(self) -> t.IO[t.Any]:  # type: ignore[override]
        """Standard input, binary."""
        return sys.stdin.buffer

    def deserialize_json(self, line: t.Any) -> dict:
        """Decode one line (does not count it: ``process_lines`` does)."""
        return decode_line(line, self.line_number)

    def process_lines(
        self,
        file_input: t.IO[t.Any] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> t.Counter[str]:
        """Decode each line and hand it to its callback (see module docstring)."""
        stats: dict[str, int] = defaultdict(int)
        lines = file_input or self.default_input
        # A text file (``--input``) is read through its binary buffer: msgspec decodes UTF-8
        # bytes directly, skipping the text layer's decode.
        if isinstance(lines, io.TextIOWrapper):
            lines = lines.buffer
        watcher = self._start_idle_watcher()
        try:
            try:
                self._read_loop(lines, callbacks, stats)
            except _StopReading:
                pass  # a stop request while waiting for input (see request_stop)
            finally:
                if watcher is not None:
                    self._watcher = None
                    watcher.stop()
            self._raise_idle_error()
        except BaseException:
            # After the watcher stopped (no flush runs any more), before the error leaves.
            if self.on_failure is not None:
                self.on_failure()
            raise
        return Counter(**stats)

    def _read_loop(
        self,
        lines: t.Iterable[bytes],
        callbacks: dict[str, t.Callable[[dict], None]],
        stats: dict[str, int],
    ) -> None:
        """Read and dispatch until the input ends or a stop is requested.

        Every instruction of this frame is between two messages (taking or dispatching one
        happens in deeper frames), which is what makes raising ``_StopReading`` here safe.
        """
        decode = decoder.decode
        get_callback = callbacks.get
        turn = self._turn
        take_line = self.take_record_line  # the target's line path (None: decode every line)
        prefixes = RECORD_LINE_PREFIXES
        if self.stop_signal is not None:
            return
        for line in lines:
            self.line_number += 1
            with turn:
                if self._idle_error is not None:
                    raise self._idle_error
                # The line path is tried here, not in _dispatch: one call fewer per record.
                try:
                    taken = take_line is not None and line.startswith(prefixes) and take_line(line)
                except _StopReading:
                    raise
                except Exception as exc:
                    explained = self._explain_line_error(exc, line)
                    if explained is None:
                        raise
                    raise explained from exc
                message_type = "RECORD" if taken else self._dispatch(line, decode, get_callback)
            stats[message_type] += 1
            if self.stop_signal is not None:
                return

    def _explain_line_error(self, exc: Exception, line: bytes) -> Exception | None:
        """``_explain`` for an error the line path raised (the line may not even be JSON).

        An error that names its own input line (a buffered line flushed now) is kept as it is:
        the current line, which only triggered the flush, is not at fault.
        """
        if isinstance(exc, (InvalidInputLine, InvalidRecord, MissingKeyPropertiesError)):
            return None
        try:
            message = decoder.decode(line)
        except Exception:  # the line is described here, not decoded
            stream = (record_line_stream(line) or b"").decode("utf-8", "replace")
            message = {"type": "RECORD", "stream": stream, "record": {}}
        return self._explain(exc, message, line)

    def _dispatch(
        self,
        line: bytes,
        decode: t.Callable[[bytes], t.Any],
        get_callback: t.Callable[[str], t.Callable[[dict], None] | None],
    ) -> str:
        self.line_bytes = len(line)
        try:
            message = decode(line)
            message_type = message["type"]
            callback = get_callback(message_type)
        except (msgspec.DecodeError, TypeError, KeyError, RecursionError):
            message = self.deserialize_json(line)  # raises the precise error
            message_type = message["type"]
            callback = get_callback(message_type)
        if callback is None:
            self.on_unknown_message(message)
            return message_type
        if message_type == "SCHEMA" and (problem := shape_problem(message)):
            raise self._ill_formed(problem, message_type, line)
        try:
            callback(message)
        except Exception as exc:
            explained = self._explain(exc, message, line)
            if explained is None:
                raise
            raise explained from exc
        return message_type

    def _ill_formed(self, problem: str, message_type: str, line: bytes) -> InvalidInputLine:
        return InvalidInputLine(
            f"input line {self.line_number}: {message_type} message {problem}: {_excerpt(line)}"
        )

    def _explain(self, exc: Exception, message: dict, line: bytes) -> Exception | None:
        """The error to raise instead of ``exc``, naming the line (None: ``exc`` says enough)."""
        message_type = message["type"]
        problem = shape_problem(message)
        if problem is not None:
            return self._ill_formed(problem, message_type, line)
        stream = message.get("stream")
        about = f"{message_type} message" + (f" for stream {stream!r}" if stream else "")
        where = f"input line {self.line_number}"
        if isinstance(exc, KeyError) and stream is not None and exc.args == (stream,):
            return RecordsWithoutSchemaException(
                f"{where}: {about} before any SCHEMA message for that stream"
            )
        if isinstance(exc, RecursionError):
            return InvalidInputLine(f"{where}: {about} is nested too deeply to process ({exc})")
        if isinstance(exc, OSError) and not isinstance(exc, DescribedOSError):
            return DescribedOSError(f"{where} ({about}): {describe_os_error(exc)}")
        return None

    def _start_idle_watcher(self) -> _IdleWatcher | None:
        if self.idle_callback is None:
            return None
        watcher = _IdleWatcher(self, self.idle_interval)
        watcher.start()
        self._watcher = watcher
        return watcher

    def _run_idle_callback(self) -> None:
        with self._turn:
            if (
                self._idle_error is not None
                or self.idle_callback is None
                or self.stop_signal is not None  # shutting down: no new idle flush
            ):
                return
            try:
                self.idle_callback()
            except BaseException as exc:  # surfaced on the main thread at the next line
                if isinstance(exc, OSError) and not isinstance(exc, DescribedOSError):
                    where = f"while the input was idle after line {self.line_number}"
                    described = DescribedOSError(f"{where}: {describe_os_error(exc)}")
                    described.__cause__ = exc
                    exc = described
                self._idle_error = exc

    def _raise_idle_error(self) -> None:
        if self._idle_error is not None:
            raise self._idle_error

    def on_unknown_message(self, message_dict: dict) -> None:
        """Refuse it, naming the line and the message types a Singer target takes."""
        msg = (
            f"input line {self.line_number}: unknown Singer message type "
            f"{message_dict.get('type')!r} (expected SCHEMA, RECORD, STATE, ACTIVATE_VERSION "
            "or BATCH)"
        )
        raise ValueError(msg)


class _StopReading(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by ``request_stop`` inside the read loop to end it between two messages."""


_READ_LOOP_CODE = LineNumberingReader._read_loop.__code__


class _IdleWatcher(threading.Thread):
    """Calls the reader's idle callback every ``interval`` seconds, or when woken, until
    stopped."""

    def __init__(self, reader: LineNumberingReader, interval: float) -> None:
        super().__init__(name="target-idle-watcher", daemon=True)
        self._reader = reader
        self._interval = interval
        self._stopped = threading.Event()
        self._woken = threading.Event()

    def run(self) -> None:
        leave_stop_signals_to_main_thread()
        while True:
            self._woken.wait(self._interval)
            self._woken.clear()
            if self._stopped.is_set():
                return
            self._reader._run_idle_callback()

    def wake(self) -> None:
        self._woken.set()

    def stop(self) -> None:
        self._stopped.set()
        self._woken.set()
        self.join()
