"""What a user sees when tap-rapid7 fails: one line, exit 1, never a secret's value.

Every test runs the real ``tap-rapid7`` command, so the SDK's CLI (its config error printing,
its excepthook, the log level it reads from ``LOGLEVEL``/``TAP_RAPID7_LOGLEVEL``) is what is
tested. The traceback is for developers: only at DEBUG.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from plugin_io.settings_types import SettingTypes, hide_secrets_in_errors
from tests.tap.loopback import LoopbackServer, read_request

TAP = str(Path(sys.executable).parent / "tap-rapid7")
START = "2026-03-01T00:00:00Z"
END = "2026-03-01T00:10:00Z"
API_KEY = "k-cli-errors-secret-4711"
# DEBUG through the SDK's two variables: the plugin's own first, then the general one.
LEVELS = {
    "default": {},
    "LOGLEVEL=DEBUG": {"LOGLEVEL": "DEBUG"},
    "TAP_RAPID7_LOGLEVEL=DEBUG": {"TAP_RAPID7_LOGLEVEL": "debug"},
}


def run_tap(
    tmp_path: Path, config: dict[str, Any], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    environ = {
        k: v for k, v in os.environ.items() if not k.endswith("LOGLEVEL") and "RAPID7" not in k
    }
    return subprocess.run(
        [TAP, "--config", str(path)],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=timeout,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "| ERROR " in line]


def fast_config(base_url: str, **more: Any) -> dict[str, Any]:
    return {
        "api_key": API_KEY, "base_url": base_url, "log_ids": ["log-a"], "start_date": START,
        "end_date": END, "max_retries": 1, "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.01, "max_concurrent_queries": 1, **more,
    }  # fmt: skip


# -- 1. config errors never show a secret --------------------------------------------------
SECRET_VALUES = {
    "int": (98765432109876543, ["98765432109876543"]),
    "list": (["listsecret-0001", 424242424242], ["listsecret-0001", "424242424242"]),
    "dict": ({"nestedkey9": {"k": "dictsecret-0002"}}, ["dictsecret-0002", "nestedkey9"]),
    "bool": (True, []),
}


@pytest.mark.parametrize("level", list(LEVELS), ids=list(LEVELS))
@pytest.mark.parametrize("kind", list(SECRET_VALUES))
def test_a_wrong_typed_api_key_is_named_never_shown(tmp_path, kind, level):
    value, texts = SECRET_VALUES[kind]
    config = {"api_key": value, "base_url": "http://127.0.0.1:9", "start_date": START}
    result = run_tap(tmp_path, config, LEVELS[level])
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    assert any(
        line.endswith("config['api_key']: must be a string (value hidden)") for line in lines
    )
    for text in texts:
        assert text not in result.stderr
        assert text not in result.stdout
    api_key_lines = [line for line in result.stderr.splitlines() if "api_key" in line]
    assert all("True" not in line for line in api_key_lines if "| ERROR " in line)


def test_other_settings_still_show_their_wrong_value(tmp_path):
    config = {"api_key": API_KEY, "region": "mars", "base_url": "x", "start_date": START}
    result = run_tap(tmp_path, config, {})
    assert result.returncode == 1
    assert "'mars' is not one of" in result.stderr
    assert API_KEY not in result.stderr


def test_a_wrong_typed_nested_secret_is_hidden_and_its_parent_too():
    """No setting of this tap is nested, but the rule holds at any depth."""
    schema = {
        "type": "object",
        "properties": {
            "auth": {
                "type": "object",
                "properties": {
                    "token": {"type": "string", "secret": True, "writeOnly": True},
                    "user": {"type": "string"},
                },
            },
            "name": {"type": "string"},
        },
    }

    def sdk_errors(config: dict) -> list[str]:  # the SDK's format (plugin_base)
        return [
            f"{e.message} in config[{']['.join(repr(i) for i in e.path)}]"
            for e in Draft202012Validator(schema).iter_errors(config)
        ]

    config: dict[str, Any] = {"auth": {"token": 31415926535, "user": 7}, "name": 5}
    shown = hide_secrets_in_errors(sdk_errors(config), schema, config)
    assert "config['auth']['token']: must be a string (value hidden)" in shown
    assert "7 is not of type 'string' in config['auth']['user']" in shown
    assert "5 is not of type 'string' in config['name']" in shown
    assert "31415926535" not in " ".join(shown)

    config = {"auth": ["tokensecret-77"]}
    shown = hide_secrets_in_errors(sdk_errors(config), schema, config)
    assert shown == ["config['auth']: must be an object (value hidden)"]


def test_setting_conversion_errors_hide_secrets_and_objects():
    schema = {
        "properties": {
            "api_key": {"type": "integer", "secret": True},
            "catalog": {"type": "object"},
            "count": {"type": "integer"},
        }
    }
    types = SettingTypes(schema, ["api_key", "catalog", "count"], env_prefix="X_")
    with pytest.raises(ValueError, match=r"got a float \(value hidden\)") as info:
        types.convert("api_key", 2.5)
    assert "2.5" not in str(info.value)
    with pytest.raises(ValueError, match="got a str") as info:
        types.convert("catalog", "postgresql://u:pw-secret@h/db")
    assert "pw-secret" not in str(info.value)
    with pytest.raises(ValueError, match=r"got 2\.5"):
        types.convert("count", 2.5)


# -- 2. a fatal error is one line; the traceback only at DEBUG -----------------------------
def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


def answer_401(conn: socket.socket, server: LoopbackServer) -> None:
    server.record(read_request(conn))
    body = b'{"message": "Unauthorized"}'
    conn.sendall(
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


def assert_one_fatal_line(result: subprocess.CompletedProcess[str], debug: bool, says: str) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert says in lines[0]
    assert API_KEY not in result.stderr
    assert API_KEY not in result.stdout
    if debug:
        assert "Traceback (most recent call last)" in result.stderr
        assert "(LOGLEVEL=DEBUG shows the traceback)" not in lines[0]
    else:
        assert "Traceback" not in result.stderr
        assert lines[0].endswith("(LOGLEVEL=DEBUG shows the traceback)")
        assert "An unhandled error occurred" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("level", list(LEVELS), ids=list(LEVELS))
def test_a_refused_connection_is_one_line(tmp_path, level):
    config = fast_config(f"http://127.0.0.1:{closed_port()}")
    result = run_tap(tmp_path, config, LEVELS[level])
    assert_one_fatal_line(result, level != "default", "cannot connect to http://127.0.0.1:")


@pytest.mark.parametrize("level", ["default", "LOGLEVEL=DEBUG"])
def test_a_401_is_one_line(tmp_path, level):
    with LoopbackServer(answer_401) as server:
        result = run_tap(tmp_path, fast_config(server.url), LEVELS[level])
    line = assert_one_fatal_line(result, level != "default", "401")
    assert "api_key" in line or "API key" in line or "Unauthorized" in line


@pytest.mark.parametrize("level", ["default", "LOGLEVEL=DEBUG"])
def test_an_unknown_log_id_is_one_line(tmp_path, emulator, level):
    config = fast_config(emulator.base_url, api_key=emulator.api_key, log_ids=["no-such-log"])
    result = run_tap(tmp_path, config, LEVELS[level])
    assert result.returncode == 1, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert "no-such-log" in lines[0] or "404" in lines[0]
    assert ("Traceback" in result.stderr) == (level != "default")
    assert emulator.api_key not in result.stderr


# -- 3. the target goes away: one line, exit 1 ---------------------------------------------
def reader_of(lines: int) -> str:
    """A target that reads ``lines`` lines and dies."""
    return f"import sys\nfor _ in range({lines}):\n    sys.stdin.buffer.readline()\n"


@pytest.mark.parametrize(
    ("level", "lines", "says"),
    [
        ("default", 5, "no STATE was written yet: the next run starts where this one did"),
        ("LOGLEVEL=DEBUG", 5, "no STATE was written yet"),
        # a window of both logs is about 1200 records: its STATE went out before line 1500
        ("default", 1500, 'the last STATE written was {"bookmarks":{"events":'),
    ],
)
def test_a_target_that_stops_reading_is_one_line(tmp_path, emulator_factory, level, lines, says):
    emu = emulator_factory(seed=3, log_count=2, events_per_second=5.0)
    config = {
        "api_key": emu.api_key, "base_url": emu.base_url, "log_ids": emu.log_ids,
        "start_date": START, "end_date": END, "window_seconds": 120, "per_page": 100,
        "poll_interval_seconds": 0.005, "poll_interval_max_seconds": 0.05,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    environ = {k: v for k, v in os.environ.items() if not k.endswith("LOGLEVEL")}
    with subprocess.Popen(
        [sys.executable, "-c", reader_of(lines)], stdin=subprocess.PIPE
    ) as reader:
        tap = subprocess.run(
            [TAP, "--config", str(tmp_path / "config.json")],
            stdout=reader.stdin,
            stderr=subprocess.PIPE,
            env={**environ, **LEVELS[level]},
            timeout=120,
            check=False,
        )
        assert reader.stdin is not None
        reader.stdin.close()
        assert reader.wait(timeout=30) == 0
    stderr = tap.stderr.decode()
    assert tap.returncode == 1, stderr[-3000:]
    error = error_lines(stderr)
    assert len(error) == 1, stderr[-3000:]
    assert "the target closed its input (broken pipe) after the tap had written " in error[0]
    assert "records (the target may have read fewer); " in error[0]
    assert says in error[0]
    assert "Exception ignored" not in stderr
    assert ("Traceback" in stderr) == (level != "default")
    assert ("An unhandled error occurred" in stderr) == (level != "default")  # at DEBUG only
    assert emu.api_key not in stderr
