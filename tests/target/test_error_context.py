"""Every error names the line, stream, field or setting at fault; OS errors with their text.

The SDK's last-resort handler logs ``exc.args[0]`` only, so that is what these tests read: a
bare ``28`` or ``'nope'`` there is what a user would have seen.
"""

from __future__ import annotations

import errno
import io
import json
import sys

import pytest

from target_parquet_parts.target import TargetParquetParts
from tests.target.conftest import run_target
from tests.target.singer_data import event, record_message, schema_message, state_message


def _logged(exc: BaseException) -> str:
    """What the SDK's excepthook prints as the ERROR line."""
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _fails(tmp_path, monkeypatch, lines: list[str]) -> str:
    with pytest.raises(Exception, match=r"^(input line|output_dir)") as info:
        run_target(tmp_path / "out", lines, monkeypatch)
    return _logged(info.value)


def test_record_given_as_an_array_names_line_and_field(tmp_path, monkeypatch):
    lines = [schema_message(), json.dumps({"type": "RECORD", "stream": "events", "record": [1]})]
    logged = _fails(tmp_path, monkeypatch, lines)
    assert logged.startswith(
        "input line 2: RECORD message 'record' must be a JSON object, got array"
    )


def test_activate_version_of_an_unknown_stream_names_line_and_stream(tmp_path, monkeypatch):
    lines = [
        schema_message(),
        json.dumps({"type": "ACTIVATE_VERSION", "stream": "nope", "version": 1}),
    ]
    logged = _fails(tmp_path, monkeypatch, lines)
    assert logged == (
        "input line 2: ACTIVATE_VERSION message for stream 'nope' before any SCHEMA message for "
        "that stream"
    )


def test_key_properties_that_are_not_a_list_name_the_line(tmp_path, monkeypatch):
    bad = json.loads(schema_message())
    bad["key_properties"] = "log_id"
    logged = _fails(tmp_path, monkeypatch, [json.dumps(bad)])
    assert logged.startswith(
        "input line 1: SCHEMA message 'key_properties' must be an array of strings (or null)"
    )


def test_json_nested_beyond_the_decoder_names_the_line(tmp_path, monkeypatch):
    deep = '{"type": "RECORD", "stream": "events", "record": {"a": ' + "[" * 50_000 + "]" * 50_000
    logged = _fails(tmp_path, monkeypatch, [schema_message(), deep + "}}"])
    assert logged.startswith("input line 2 is nested too deeply to decode")
    assert len(logged) < 400  # an excerpt, not the whole line


class _FullDevice(io.RawIOBase):
    """Standard output on a full device: every write fails with ENOSPC."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        raise OSError(errno.ENOSPC, "No space left on device")


class _FullStdout(io.TextIOWrapper):
    def __init__(self) -> None:
        super().__init__(_FullDevice(), encoding="utf-8")


def test_os_error_writing_state_names_errno_text_and_where(tmp_path):
    target = TargetParquetParts(config={"output_dir": str(tmp_path / "out")})
    data = (state_message({"a": 1}) + "\n").encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", _FullStdout())
        with pytest.raises(OSError, match="standard output") as info:
            target.listen(file_input=io.BytesIO(data))
    assert _logged(info.value) == (
        "cannot write STATE to standard output: OSError: [Errno 28] No space left on device "
        "(ENOSPC)"
    )


def test_os_error_in_a_handler_names_line_message_and_errno(tmp_path, monkeypatch):
    from target_parquet_parts import target as target_module

    def fail(self, message_dict):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/x")

    monkeypatch.setattr(target_module.TargetParquetParts, "_process_state_message", fail)
    logged = _fails(tmp_path, monkeypatch, [state_message({"a": 1})])
    assert logged == (
        "input line 1 (STATE message): PermissionError: [Errno 13] Permission denied: "
        "'/somewhere/x' (EACCES)"
    )


def test_os_error_under_output_dir_names_the_errno(tmp_path, monkeypatch):
    from target_parquet_parts import parts

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "events"))

    monkeypatch.setattr(parts.pq, "write_table", no_space)
    lines = [schema_message(), record_message(event(1))]
    logged = _fails(tmp_path, monkeypatch, lines)
    assert logged.startswith(f"output_dir '{tmp_path / 'out'}' is not writable")
    assert logged.endswith(
        f"OSError: [Errno 28] No space left on device: '{tmp_path / 'out' / 'events'}' (ENOSPC)"
    )


def test_os_error_in_the_idle_watcher_names_errno_and_where():
    from target_parquet_parts.reader import LineNumberingReader

    reader = LineNumberingReader()
    reader.line_number = 41

    def flush_while_idle():
        raise OSError(errno.EIO, "Input/output error", "/data/out/events")

    reader.idle_callback = flush_while_idle
    reader._run_idle_callback()
    with pytest.raises(OSError, match="idle") as info:
        reader._raise_idle_error()
    assert _logged(info.value) == (
        "while the input was idle after line 41: OSError: [Errno 5] Input/output error: "
        "'/data/out/events' (EIO)"
    )
