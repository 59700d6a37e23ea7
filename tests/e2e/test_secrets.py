"""The API key never appears in any output, and never reaches another host (issue 11, finding 3).

Every output is searched: the tap's stdout and stderr at DEBUG (the SDK's ``TAP_RAPID7_LOGLEVEL``;
urllib3's own DEBUG lines included), the target's stdout and stderr, every file the target
writes (parts, read back row by row, and the exactly-once journal) and Meltano's output and log
files. Keys as they come from secret files are included: surrounded by whitespace (stripped and
used) and with a line break inside (refused without being quoted). A loopback server answering
302 to another loopback port, and one whose page names a ``Next`` link there, check that the
other port never receives ``X-Api-Key``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from logsearch_emulator import EmulatorOptions, running_emulator
from tests.e2e.pipeline import TAP, start
from tests.meltano_cli import requires_meltano
from tests.pipeline.test_meltano_pipeline import _meltano, project
from tests.tap.loopback import LoopbackServer, read_request, request_headers

pytestmark = pytest.mark.e2e

__all__ = ["project"]  # the Meltano project fixture, shared with the Meltano pipeline test

KEY = "r7-secret-KEY-5b1f0c9e2d7a4e68"
WRONG_KEY = "r7-wrong-KEY-0a9d8c7b6e5f4a3b"
SPACED_KEY = f"  {KEY}\n"  # as read from a secret file: stripped, then used
BROKEN_KEY = KEY[:14] + "\n" + KEY[14:]  # a line break inside: refused, never quoted
START, END = "2026-02-01T00:00:00Z", "2026-02-01T00:03:00Z"


def fragments(*secrets: str) -> list[str]:
    """Each key whole and as halves: a message quoting it escaped or cut still shows a half."""
    found: list[str] = []
    for secret in secrets:
        core = secret.strip()
        found += [core, core[: len(core) // 2], core[len(core) // 2 :]]
        found += [part for part in core.split("\n") if len(part) >= 8]
    return found


def assert_no_key(where: str, text: str | bytes, *secrets: str) -> None:
    data = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
    for fragment in fragments(*secrets):
        assert fragment not in data, f"{where} holds (part of) the API key: {fragment!r}"


def run_tap(tmp_path: Path, config: dict, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "TAP_RAPID7_LOGLEVEL": "DEBUG"}
    return subprocess.run(
        [TAP, "--config", str(path)], check=False, capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip


def tap_config(base_url: str, log_ids: list[str], **overrides: object) -> dict:
    return {
        "api_key": KEY, "base_url": base_url, "log_ids": log_ids, "start_date": START,
        "end_date": END, "window_seconds": 60, "per_page": 100, "poll_interval_seconds": 0.001,
        "backoff_base_seconds": 0.01, **overrides,
    }  # fmt: skip


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
        config = tap_config(emu.base_url, emu.log_ids)
        ok = run_tap(tmp_path, config, "ok")
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert "logsearch_response" in ok.stderr  # DEBUG previews really were on
        assert "logsearch_poll" in ok.stderr
        assert "urllib3.connectionpool" in ok.stderr  # and urllib3's DEBUG lines
        assert '"type":"RECORD"' in ok.stdout.replace(" ", "")
        spaced = run_tap(tmp_path, {**config, "api_key": SPACED_KEY}, "spaced")
        assert spaced.returncode == 0, spaced.stderr[-2000:]
        assert spaced.stdout.count('"RECORD"') == ok.stdout.count('"RECORD"')
        refused = run_tap(tmp_path, {**config, "api_key": WRONG_KEY}, "wrong")
        assert refused.returncode != 0
        assert "HTTP 401" in refused.stderr
        assert "api_key setting" in refused.stderr
        broken = run_tap(tmp_path, {**config, "api_key": BROKEN_KEY}, "broken")
        assert broken.returncode != 0
        assert "the api_key setting has a control character (U+000A) at position 15" in (
            broken.stderr
        )
    for name, result in {"ok": ok, "spaced": spaced, "wrong": refused, "broken": broken}.items():
        assert_no_key(f"{name} stdout", result.stdout, KEY, WRONG_KEY)
        assert_no_key(f"{name} stderr", result.stderr, KEY, WRONG_KEY)


def recorder(conn, server):
    """The other host: records what it is sent."""
    server.record(read_request(conn))
    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("how", ["redirect", "next link"])
def test_another_host_never_gets_the_key(tmp_path, how):
    with LoopbackServer(recorder) as other:
        elsewhere = f"{other.url}/query/logs/log-a?stolen=1"

        def api(conn, server):
            raw = read_request(conn)
            server.record(raw)
            if how == "redirect":
                head, body = f"302 Found\r\nLocation: {elsewhere}", b""
            else:
                page = {"events": [], "links": [{"rel": "Next", "href": elsewhere}]}
                head, body = "200 OK\r\nContent-Type: application/json", json.dumps(page).encode()
            head += f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            conn.sendall(b"HTTP/1.1 " + head.encode() + body)

        with LoopbackServer(api) as server:
            result = run_tap(
                tmp_path, tap_config(server.url, ["log-a"], api_key=SPACED_KEY), "elsewhere"
            )
    assert result.returncode != 0
    assert other.connections == 0  # not even a connection
    assert other.requests == []
    # a connection the client opened and closed without a request (a pooled one it gave up on)
    # carries nothing; every request that was sent carries the key as configured
    sent = [raw for raw in server.requests if raw.strip()]
    assert sent
    assert all(request_headers(raw).get("x-api-key") == KEY for raw in sent)
    assert f"to another host: {other.url}, not the configured {server.url}" in result.stderr
    assert_no_key("stderr", result.stderr, KEY)
    assert_no_key("stdout", result.stdout, KEY)


def dataset_text(output_dir: Path) -> dict[str, bytes]:
    """Every file under ``output_dir``: raw bytes, and parts also read back as rows (a part's
    bytes are compressed: a key inside would not show as such)."""
    texts: dict[str, bytes] = {}
    for path in sorted(p for p in output_dir.rglob("*") if p.is_file()):
        texts[str(path)] = path.read_bytes()
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
            texts[f"{path} (rows)"] = json.dumps(rows, default=str).encode()
    return texts


def test_no_key_in_the_dataset_journal_or_target_output(tmp_path, monkeypatch):
    monkeypatch.setenv("TAP_RAPID7_LOGLEVEL", "DEBUG")
    monkeypatch.setenv("TARGET_PARQUET_PARTS_LOGLEVEL", "DEBUG")
    options = EmulatorOptions(seed=4, api_key=KEY, log_count=2)
    output_dir = tmp_path / "lake"
    with running_emulator(options) as emu:
        config = tap_config(emu.base_url, emu.log_ids, api_key=SPACED_KEY)
        target = {"output_dir": str(output_dir), "batch_size_rows": 50}
        with start(tmp_path, config, target) as run:
            # kill -9 after the first STATE: the journal then holds the parts after it
            assert run.next_state() is not None
            run.kill()
        with start(tmp_path, config, target, state=run.states[-1], run="rerun") as rerun:
            rerun.finish()
    files = dataset_text(output_dir)
    assert any("_journal" in name for name in files)
    assert any(name.endswith("(rows)") for name in files)
    for name, data in files.items():
        assert_no_key(name, data, KEY)
    for run_dir in ("run", "rerun"):
        for output in ("tap.stderr", "target.stderr"):
            assert_no_key(output, (tmp_path / run_dir / output).read_bytes(), KEY)
    for state in run.states + rerun.states:
        assert_no_key("target STATE", json.dumps(state), KEY)


@requires_meltano
def test_no_key_in_meltano_output_or_logs(project, tmp_path):
    """`meltano --log-level=debug run` with the key from the environment, surrounded by
    whitespace: neither Meltano's output (the plugins' DEBUG lines included) nor anything it
    keeps in `.meltano/` (its database, run files; not the plugins' venvs) holds the key."""
    options = EmulatorOptions(seed=6, api_key=KEY, log_count=2)
    env = {
        **os.environ,
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_ENVIRONMENT": "dev",
        "TAP_RAPID7_API_KEY": SPACED_KEY,
        "TAP_RAPID7_START_DATE": START,
        "TAP_RAPID7_END_DATE": END,
        "TARGET_PARQUET_PARTS_OUTPUT_DIR": str(tmp_path / "lake"),
    }
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    _meltano(project, env, "install")
    with running_emulator(options) as emu:
        env["TAP_RAPID7_BASE_URL"] = emu.base_url
        ran = _meltano(
            project, env, "--log-level=debug", "run", "tap-rapid7", "target-parquet-parts"
        )
    assert "logsearch_response" in ran.stderr  # the tap's DEBUG lines came through Meltano
    assert_no_key("meltano run stdout", ran.stdout, KEY)
    assert_no_key("meltano run stderr", ran.stderr, KEY)
    kept = [
        p for p in (project / ".meltano").rglob("*")
        if p.is_file() and "venv" not in p.relative_to(project / ".meltano").parts
    ]  # fmt: skip
    assert any(p.name == "meltano.db" for p in kept)
    for path in kept:
        assert_no_key(str(path), path.read_bytes(), KEY)
    dataset = dataset_text(tmp_path / "lake")
    assert any(name.endswith("(rows)") for name in dataset)  # the spaced key worked
    for name, data in dataset.items():
        assert_no_key(name, data, KEY)
