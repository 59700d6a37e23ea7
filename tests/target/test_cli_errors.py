"""What a user sees when target-parquet-parts fails: one line, exit 1, never a secret's value.

Every test runs the real ``target-parquet-parts`` command, so the SDK's CLI (its config error
printing, its excepthook, the log level it reads from ``LOGLEVEL`` and
``TARGET_PARQUET_PARTS_LOGLEVEL``) is what is tested. The traceback is for developers: only at
DEBUG. ``iceberg_catalog`` may hold credentials (keys, tokens, a password in its URI).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.target.conftest import TARGET_BIN

LEVELS = {
    "default": {},
    "LOGLEVEL=DEBUG": {"LOGLEVEL": "DEBUG"},
    "TARGET_PARQUET_PARTS_LOGLEVEL=DEBUG": {"TARGET_PARQUET_PARTS_LOGLEVEL": "debug"},
}
SCHEMA = {
    "type": "SCHEMA",
    "stream": "events",
    "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
    "key_properties": [],
}
GOOD_INPUT = json.dumps(SCHEMA) + "\n" + json.dumps(
    {"type": "RECORD", "stream": "events", "record": {"id": 1}}
) + "\n"  # fmt: skip


def run_target(
    tmp_path: Path, config: dict[str, Any], env: dict[str, str], text: str = GOOD_INPUT
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    environ = {k: v for k, v in os.environ.items() if not k.endswith("LOGLEVEL")}
    return subprocess.run(
        [TARGET_BIN, "--config", str(path)],
        input=text,
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=120,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "| ERROR " in line]


# -- 1. config errors never show a secret --------------------------------------------------
CATALOGS = {
    "str": ("postgresql://u:pw-hidden-4711@db/x", ["pw-hidden-4711", "postgresql://u"]),
    "list": ([{"s3.secret-access-key": "s3-hidden-4712"}], ["s3-hidden-4712"]),
    "int": (98765432109876543, ["98765432109876543"]),
    "bool": (True, []),
}


@pytest.mark.parametrize("level", list(LEVELS), ids=list(LEVELS))
@pytest.mark.parametrize("kind", list(CATALOGS))
def test_a_wrong_typed_catalog_is_named_never_shown(tmp_path, kind, level):
    value, texts = CATALOGS[kind]
    config = {"output_dir": str(tmp_path / "out"), "table_format": "iceberg"}
    result = run_target(tmp_path, {**config, "iceberg_catalog": value}, LEVELS[level])
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    hidden = "config['iceberg_catalog']: must be an object or null (value hidden)"
    assert any(line.endswith(hidden) for line in lines), result.stderr
    for text in texts:
        assert text not in result.stderr
        assert text not in result.stdout
    assert all("True" not in line for line in lines)


def test_other_settings_still_show_their_wrong_value(tmp_path):
    config = {"output_dir": str(tmp_path / "out"), "compression": "zip"}
    result = run_target(tmp_path, config, {})
    assert result.returncode == 1
    assert "'zip' is not one of" in result.stderr


# -- 2. a fatal error is one line; the traceback only at DEBUG -----------------------------
def assert_one_fatal_line(result: subprocess.CompletedProcess[str], debug: bool, says: str) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert says in lines[0]
    if debug:
        assert "Traceback (most recent call last)" in result.stderr
        assert "(LOGLEVEL=DEBUG shows the traceback)" not in lines[0]
    else:
        assert "Traceback" not in result.stderr
        assert lines[0].endswith("(LOGLEVEL=DEBUG shows the traceback)")
    return lines[0]


@pytest.mark.parametrize("level", list(LEVELS), ids=list(LEVELS))
def test_a_bad_input_line_is_one_line(tmp_path, level):
    text = json.dumps(SCHEMA) + "\nnot json\n"
    result = run_target(tmp_path, {"output_dir": str(tmp_path / "out")}, LEVELS[level], text)
    assert_one_fatal_line(result, level != "default", "input line 2 is not valid JSON")


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


@pytest.mark.parametrize("level", ["default", "LOGLEVEL=DEBUG"])
def test_an_unreachable_iceberg_catalog_is_one_line_without_its_credential(tmp_path, level):
    pytest.importorskip("pyiceberg")
    catalog = {
        "type": "rest",
        "uri": f"http://127.0.0.1:{closed_port()}",
        "credential": "client:rest-hidden-4713",
        "token": "tok-hidden-4714",
    }
    config = {
        "output_dir": str(tmp_path / "out"), "table_format": "iceberg", "iceberg_catalog": catalog
    }  # fmt: skip
    result = run_target(tmp_path, config, LEVELS[level])
    line = assert_one_fatal_line(result, level != "default", "Iceberg REST catalog")
    assert catalog["uri"] in line  # the useful parts of the catalog are still named
    for secret in ("rest-hidden-4713", "tok-hidden-4714"):
        assert secret not in result.stderr
        assert secret not in result.stdout
