"""Newcomer friction: an unwritable output_dir is explained; --about names this target."""

from __future__ import annotations

import errno
import json
import subprocess

import pytest

from plugin_io.distribution import distribution_version
from target_parquet_parts.errors import describe_write_error
from tests.target.conftest import TARGET_BIN
from tests.target.singer_data import events_lines

pytestmark = pytest.mark.e2e


def test_output_dir_under_a_file_names_path_operation_and_os_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    output_dir = blocker / "sub"
    config = tmp_path / "target.json"
    config.write_text(json.dumps({"output_dir": str(output_dir)}))
    result = subprocess.run(
        [TARGET_BIN, "--config", str(config)],
        input="\n".join(events_lines(5, state_every=5)) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line or "ERROR " in line]
    first = errors[0]
    assert f"output_dir {str(output_dir)!r} is not writable" in first
    assert "mkdir" in first
    assert "NotADirectoryError: [Errno 20] Not a directory" in first
    assert str(output_dir) in first


def test_permission_error_text():
    try:
        raise PermissionError(errno.EACCES, "Permission denied", "/x/events")
    except PermissionError as exc:
        message = describe_write_error(exc, "/x")
    assert message.startswith("output_dir '/x' is not writable")
    assert "failed on '/x/events'" in message
    assert message.endswith("PermissionError: [Errno 13] Permission denied: '/x/events' (EACCES)")


def test_about_names_this_target_and_the_installed_version():
    """Its own name, the version of the one distribution it ships in."""
    result = subprocess.run(
        [TARGET_BIN, "--about", "--format=json"], capture_output=True, text=True, check=True
    )
    about = json.loads(result.stdout)
    assert about["name"] == "target-parquet-parts"
    assert about["version"] == distribution_version() != "0+unknown"
