"""The snippets users copy from README.md and docs/*.md run as written.

Marker convention. A fenced ```python or ```bash block is runnable when the line right before
its opening fence (no blank line between, same indentation allowed) is one of:

    <!-- runnable -->
    <!-- runnable: SETUP -->
    <!-- runnable: SETUP, SETUP, ... -->

where each SETUP is a name, followed by its argument for the names that take one (a space
between). The setups, prepared in the order named, in the snippet's working directory:

- ``emulator``: a running emulator (default options, API key ``emulator-key``) on a free
  loopback port; ``./config.json`` is a tap config for it (``start_date`` 5 minutes ago) and
  ``./target.json`` is ``{"output_dir": "out"}``.
- ``parts DIR``: a real dataset of parts in ``./DIR`` (relative): ``tap-rapid7 |
  target-parquet-parts`` over five minutes of the emulator's four logs, streams ``events``,
  ``logs``, ``logsets``, ``date=`` directories by ``received_at``.
- ``iceberg DIR``: the same run with ``table_format: iceberg``: tables ``singer.events``,
  ``singer.logs``, ``singer.logsets`` in ``./DIR`` (embedded catalog ``./DIR/catalog.db``).
- ``run.log``: ``./run.log``, both plugins' stderr of such a run.
- ``demo-output``: what ``scripts/demo.sh`` leaves behind: ``demo-output/dataset`` (parts,
  ``event_time`` filled), ``demo-output/run-1.log``, ``demo-output/tap-config.json`` (the API at
  ``http://127.0.0.1:8765``, key ``emulator-key``; that emulator is not running). The dataset
  holds what ``tap-rapid7-emulator --seed 7`` serves.
- ``port N``: loopback port N is free, for a snippet that starts its own server there (checked,
  not made: the test fails naming the port when something listens on it).

Examples: ``<!-- runnable: parts out -->``, ``<!-- runnable: iceberg demo-output/lake -->``,
``<!-- runnable: demo-output, port 8765 -->``. The list lives in
``tests/doc_snippets_support.py`` (``SETUPS``); a marker naming anything else fails its test.

How a snippet runs. Each in a fresh temporary directory as the working directory, with the dev
venv's ``bin`` first on ``PATH`` (commands as after ``source .venv/bin/activate``); python
snippets with the venv's ``python``, bash snippets with ``bash -euo pipefail``; its own session,
killed at the end (a server it started with ``&`` does not outlive it), within
``SNIPPET_TIMEOUT_SECONDS``. A failure names ``file:line`` (the opening fence) and shows the
snippet and its stderr. Not marked: snippets that need a real Rapid7 API key, cloud credentials,
Spark, a Meltano project, or a package the dev venv lacks (Polars).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from logsearch_emulator.server import RunningEmulator
from tests.doc_snippets_support import (
    SNIPPET_TIMEOUT_SECONDS,
    SetupContext,
    Snippet,
    collect,
    failure,
    parse_markdown,
    prepare,
    run_snippet,
    setup_problems,
)
from tests.e2e.pipeline import BIN

RUNNABLE, MARKER_PROBLEMS = collect()


def _run(
    snippet: Snippet,
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
    timeout: float = SNIPPET_TIMEOUT_SECONDS,
) -> str | None:
    """Prepare the snippet's setups, run it; None on success, else the failure message."""
    problems = setup_problems(snippet)
    if problems:
        return "\n".join(problems)
    cwd = tmp_path / "work"
    cwd.mkdir()
    prepare(snippet, SetupContext(cwd, tmp_path / "setup", emulator_factory))
    return failure(snippet, run_snippet(snippet, cwd, tmp_path / "snippet", timeout))


@pytest.mark.e2e
@pytest.mark.parametrize("snippet", [pytest.param(s, id=s.id) for s in RUNNABLE])
def test_marked_snippet_runs(
    snippet: Snippet, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    message = _run(snippet, tmp_path, emulator_factory)
    if message is not None:
        pytest.fail(message, pytrace=False)


def test_docs_have_runnable_snippets() -> None:
    documents = {snippet.document for snippet in RUNNABLE}
    assert {"docs/emulator.md", "docs/runbook.md", "docs/target-design.md"} <= documents


def test_every_marker_stands_on_a_python_or_bash_fence_and_names_known_setups() -> None:
    problems = [*MARKER_PROBLEMS, *(p for s in RUNNABLE for p in setup_problems(s))]
    assert not problems, "\n".join(problems)


# --- the checker itself -----------------------------------------------------------------------

DOC = """# A document

<!-- runnable -->
```python
print("fine")
```

Unmarked, not run:

```bash
exit 3
```

- a list item

  <!-- runnable: parts out, port 8765 -->
  ```bash
  ls out
  ```

<!-- runnable -->
```sql
select 1;
```

<!-- runnable -->

```bash
true
```
"""


def test_markers_are_read_with_their_setups_and_misplaced_ones_reported() -> None:
    snippets, problems = parse_markdown(DOC, "docs/x.md")
    runnable = [s for s in snippets if s.runnable]
    assert [(s.id, s.language, s.setups) for s in runnable] == [
        ("docs/x.md:4", "python", ()),
        ("docs/x.md:17", "bash", ("parts out", "port 8765")),
    ]
    assert runnable[1].code == "ls out\n"
    assert problems == [
        "docs/x.md:21: marker on a ```sql fence; only python, bash snippets run",
        "docs/x.md:26: marker not on the line right before a code fence",
    ]


def test_a_broken_snippet_fails_naming_its_place_and_stderr(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    broken = Snippet("docs/x.md", 12, "python", "raise SystemExit('no such table')\n", "m")
    message = _run(broken, tmp_path, emulator_factory)
    assert message is not None
    assert message.startswith("docs/x.md:12: the python snippet exited with status 1")
    assert "no such table" in message


def test_a_failing_command_fails_a_bash_snippet_even_before_its_last_line(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    code = "false | cat\necho not reached\n"  # pipefail: a failing pipeline stops it
    message = _run(Snippet("docs/x.md", 3, "bash", code, "m"), tmp_path, emulator_factory)
    assert message is not None
    assert "docs/x.md:3: the bash snippet exited with status 1" in message


def test_a_hanging_snippet_is_killed_at_the_timeout(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    code = "import threading\nthreading.Event().wait()\n"
    hanging = Snippet("docs/x.md", 5, "python", code, "m")
    message = _run(hanging, tmp_path, emulator_factory, timeout=1.0)
    assert message is not None
    assert "docs/x.md:5: the python snippet did not finish within 1 s (killed)" in message


def test_a_passing_snippet_runs_in_a_fresh_directory_with_the_venv_first_on_path(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    code = (
        'test -z "$(ls -A)"\n'  # a fresh, empty working directory
        f'test "$(command -v tap-rapid7)" = {BIN / "tap-rapid7"}\n'  # the venv's commands first
    )
    ok = Snippet("docs/x.md", 7, "bash", code, "m")
    assert _run(ok, tmp_path, emulator_factory) is None


def test_an_unknown_setup_fails_the_snippet(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    unknown = Snippet("docs/x.md", 9, "bash", "true\n", "m", setups=("parquet out",))
    message = _run(unknown, tmp_path, emulator_factory)
    assert message is not None
    assert message.startswith("docs/x.md:9: unknown setup 'parquet out' (known: demo-output, ")
    missing = Snippet("docs/x.md", 9, "bash", "true\n", "m", setups=("parts",))
    assert setup_problems(missing) == ["docs/x.md:9: setup 'parts' needs an argument: parts DIR"]
