"""The API key never appears in any output of the tap, even at DEBUG with faults and errors."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from logsearch_emulator import EmulatorOptions, running_emulator
from tests.e2e.pipeline import TAP

pytestmark = pytest.mark.e2e

KEY = "r7-secret-KEY-5b1f0c9e2d7a4e68"
WRONG_KEY = "r7-wrong-KEY-0a9d8c7b6e5f4a3b"


def run_tap(tmp_path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"c-{config['api_key'][-4:]}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "TAP_RAPID7_LOGLEVEL": "DEBUG"}
    return subprocess.run(
        [TAP, "--config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_key_never_in_stdout_or_stderr_at_debug(tmp_path):
    options = EmulatorOptions(
        seed=9,
        api_key=KEY,
        log_count=2,
        error_rate=0.1,
        force_429_on_request=(2,),
        forced_429_retry_after=0.5,
        duplicate_next=True,
    )
    with running_emulator(options) as emu:
        config = {
            "api_key": KEY,
            "base_url": emu.base_url,
            "log_ids": emu.log_ids,
            "start_date": "2026-02-01T00:00:00Z",
            "end_date": "2026-02-01T00:03:00Z",
            "window_seconds": 60,
            "per_page": 100,
            "poll_interval_seconds": 0.001,
            "backoff_base_seconds": 0.01,
        }
        ok = run_tap(tmp_path, config)
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert "logsearch_response" in ok.stderr  # DEBUG previews really were on
        assert "logsearch_poll" in ok.stderr
        assert '"type":"RECORD"' in ok.stdout.replace(" ", "")
        refused = run_tap(tmp_path, {**config, "api_key": WRONG_KEY})
        assert refused.returncode != 0
        assert "HTTP 401" in refused.stderr
        assert "api_key setting" in refused.stderr
    for result in (ok, refused):
        for secret in (KEY, WRONG_KEY):
            assert secret not in result.stdout
            assert secret not in result.stderr
