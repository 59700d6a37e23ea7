"""tap-rapid7-timeline without -o writes beside the first log, not into the current directory."""

from __future__ import annotations

from pipeline_tools.timeline import main
from tests.timeline.test_timeline import PNG_MAGIC, _run_log


def test_default_output_goes_next_to_the_first_log(tmp_path, monkeypatch, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "run.log"
    log.write_text("\n".join(_run_log()) + "\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main([str(log)]) == 0
    expected = logs / "run.log.timeline.png"
    assert expected.read_bytes().startswith(PNG_MAGIC)
    assert list(cwd.iterdir()) == []
    assert f"-> {expected}" in capsys.readouterr().out
