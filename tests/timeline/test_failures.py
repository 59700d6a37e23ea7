"""tap-rapid7-timeline's failures: one line on stderr, a nonzero exit, a traceback only at DEBUG.

Lines that cannot be read are skipped (with one note naming the first), not fatal.
"""

from __future__ import annotations

import pytest

from pipeline_tools import timeline as tl
from pipeline_tools.timeline import main
from tests.timeline.test_timeline import PNG_MAGIC, _run_log

PROG = "tap-rapid7-timeline: "
PAGE = "logsearch_page_complete log_id=a page=1 event_count=5"
MELTANO = "2026-11-26T07:00:0{s}.500000Z [info     ] tap-rapid7   "


def _lines(err: str) -> list[str]:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith(PROG) for line in lines), err
    return lines


@pytest.fixture
def good_log(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("\n".join(_run_log()) + "\n")
    return log


def test_a_missing_log_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.log"
    assert main([str(missing), "-o", str(tmp_path / "t.png")]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"{PROG}cannot read {missing}: No such file or directory"
    ]
    assert not (tmp_path / "t.png").exists()


def test_a_log_that_cannot_be_read_is_one_line_and_exit_2(good_log, tmp_path, capsys):
    # a directory cannot be read even by root (a mode-000 file can)
    assert main([str(good_log), str(tmp_path), "-o", str(tmp_path / "t.png")]) == 2
    assert _lines(capsys.readouterr().err) == [f"{PROG}cannot read {tmp_path}: Is a directory"]
    assert not (tmp_path / "t.png").exists()


def test_a_malformed_line_is_skipped_with_one_note(good_log, tmp_path, capsys):
    bad = [
        MELTANO.format(s=1).replace("-11-", "-13-") + f"{PAGE} polls=0",  # month 13
        MELTANO.format(s=2) + f"{PAGE} polls=[1,2] elapsed_seconds=1",
        MELTANO.format(s=3) + "logsearch_retry log_id=a wait_seconds=inf",
        '{"ts": 1800000000.0, "message": "x", "extra": {"event_name": "flush_complete", '
        '"rows": "many"}}',
    ]
    log = tmp_path / "mixed.log"
    log.write_text("\n".join([*bad, *_run_log()]) + "\n")
    out = tmp_path / "t.png"
    assert main([str(log), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    captured = capsys.readouterr()
    assert "1 queries, 2 pages, 1 flushes, 1 retries over 3.5s" in captured.out  # as without
    assert _lines(captured.err) == [
        f"{PROG}skipped 4 lines that could not be read "
        f"(first: {log}:1: ValueError: month must be in 1..12)"
    ]
    assert main([str(log), "-o", str(out), "--log-level", "ERROR"]) == 0
    assert capsys.readouterr().err == ""


def test_a_log_of_malformed_lines_only_is_one_line_and_exit_2(tmp_path, capsys):
    log = tmp_path / "bad.log"
    log.write_text(MELTANO.format(s=2) + f"{PAGE} polls=x\n")
    assert main([str(log), "-o", str(tmp_path / "t.png")]) == 2
    assert _lines(capsys.readouterr().err) == [
        f"{PROG}no tap or target events found in the log; skipped 1 line that could not be "
        f"read (first: {log}:1: logsearch_page_complete polls='x' is not a number)"
    ]


def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(good_log, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "t.png"
    assert main([str(good_log), "-o", str(out)]) == 1
    assert _lines(capsys.readouterr().err) == [f"{PROG}cannot write {out}: File exists: {blocker}"]


def test_a_bug_is_one_line_and_its_traceback_only_at_debug(good_log, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("drawing went wrong\nsecond line")

    monkeypatch.setattr(tl, "render_timeline", broken)
    assert main([str(good_log), "-o", str(tmp_path / "t.png")]) == 1
    assert _lines(capsys.readouterr().err) == [
        f"{PROG}failed: RuntimeError: drawing went wrong (--log-level DEBUG shows the traceback)"
    ]
    assert main([str(good_log), "-o", str(tmp_path / "t.png"), "--log-level", "DEBUG"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "RuntimeError: drawing went wrong" in err
    assert err.strip().splitlines()[-1].startswith(f"{PROG}failed: RuntimeError")


def test_events_far_out_of_order_are_drawn_with_a_note(tmp_path, capsys):
    lines = _run_log()
    late = lines[0].replace('"ts": 1800000000.0', '"ts": 1799999000.0')  # 1000 s early
    log = tmp_path / "late.log"
    log.write_text("\n".join([*lines, *[lines[-1].replace("1800000003.5", "1800000200.0")],
                              late]) + "\n")  # fmt: skip
    assert main([str(log), "-o", str(tmp_path / "t.png")]) == 0
    assert _lines(capsys.readouterr().err) == [
        f"{PROG}1 event came more than 60s after later ones: drawn where they fall"
    ]
