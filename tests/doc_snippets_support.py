"""What `tests/test_doc_snippets.py` runs: find the marked snippets, prepare their setups, run them.

The marker convention is described in `tests/test_doc_snippets.py`'s docstring; `SETUPS` below is
the list of setup names a marker may use, with what each prepares.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logsearch_emulator.server import RunningEmulator
from tap_rapid7.windows import millis_to_iso
from tests.e2e.pipeline import BIN, start

ROOT = Path(__file__).resolve().parent.parent
# The languages a marker may stand on, and how each is run (interpreters from the dev venv).
RUNNERS: dict[str, tuple[str, ...]] = {
    "python": (str(BIN / "python"),),
    "bash": ("bash", "-euo", "pipefail"),
}
SUFFIXES = {"python": ".py", "bash": ".sh"}
SNIPPET_TIMEOUT_SECONDS = 120.0

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^<!--\s*runnable(?:\s*:\s*(?P<setups>[^>]*?))?\s*-->$")
_MARKER_LIKE = re.compile(r"<!--\s*runnable\b")
# The emulator's messages carry their own time there (as in meltano.yml's dev environment).
EVENT_TIME_FIELDS = ["timestamp", "timeGenerated", "time", r"re:^(?:<\d+>)?(\S+)"]
DEMO_PORT = 8765


def documents(root: Path = ROOT) -> list[Path]:
    """The Markdown files whose snippets users copy: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Snippet:
    """One fenced code block of a document, with the marker on the line before it (if any)."""

    document: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None  # the marker comment's text, None when unmarked
    setups: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.marker is not None


def parse_markdown(text: str, document: str) -> tuple[list[Snippet], list[str]]:
    """Every fenced block of ``text`` and the problems with its markers.

    A problem is a marker that does not sit on the line right before a ```python or ```bash
    fence, or a marker that does not follow the syntax.
    """
    lines = text.splitlines()
    snippets: list[Snippet] = []
    problems: list[str] = []
    consumed: set[int] = set()  # marker lines that stand before a fence
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        marker = lines[index - 1].strip() if index > 0 else ""
        setups: tuple[str, ...] = ()
        if _MARKER_LIKE.search(marker):
            consumed.add(index - 1)
            match = _MARKER.match(marker)
            where = f"{document}:{index}"
            if not match:
                problems.append(f"{where}: malformed marker {marker!r}")
                marker = ""
            elif language not in RUNNERS:
                problems.append(
                    f"{where}: marker on a ```{language or '(no language)'} fence; only "
                    f"{', '.join(RUNNERS)} snippets run"
                )
                marker = ""
            else:
                setups = tuple(s.strip() for s in (match["setups"] or "").split(",") if s.strip())
        else:
            marker = ""
        snippets.append(
            Snippet(
                document=document,
                line=index + 1,
                language=language,
                code="\n".join(body) + "\n",
                marker=marker or None,
                setups=setups,
            )
        )
        index = end + 1
    fenced = {n for s in snippets for n in range(s.line - 1, s.line + s.code.count("\n") + 1)}
    for number, line in enumerate(lines):
        if _MARKER_LIKE.search(line) and number not in consumed and number not in fenced:
            problems.append(
                f"{document}:{number + 1}: marker not on the line right before a code fence"
            )
    return snippets, problems


def collect(root: Path = ROOT) -> tuple[list[Snippet], list[str]]:
    """The runnable snippets of every document, and every marker problem."""
    runnable: list[Snippet] = []
    problems: list[str] = []
    for path in documents(root):
        if not path.is_file():
            continue
        snippets, found = parse_markdown(
            path.read_text(encoding="utf-8"), path.relative_to(root).as_posix()
        )
        runnable.extend(s for s in snippets if s.runnable and s.language in RUNNERS)
        problems.extend(found)
    return runnable, problems


# --- setups -----------------------------------------------------------------------------------


@dataclass
class SetupContext:
    """Where a snippet runs (``cwd``), room for the setups' own files (``scratch``, not the
    snippet's directory), and the emulator the setups share (started on first use)."""

    cwd: Path
    scratch: Path
    emulator_factory: Callable[..., RunningEmulator]
    runs: int = 0
    _emulator: RunningEmulator | None = field(default=None, repr=False)

    def emulator(self) -> RunningEmulator:
        """An emulator with the default options: the data of `tap-rapid7-emulator --seed 7`."""
        if self._emulator is None:
            self._emulator = self.emulator_factory()
        return self._emulator

    def run_pipeline(self, output_dir: Path, **target: Any) -> Path:
        """`tap-rapid7 | target-parquet-parts` as processes: five closed minutes of the
        emulator's four logs into ``output_dir``; returns the run's directory (its stderr)."""
        emu = self.emulator()
        end = emu.now_ms() // 60_000 * 60_000 - 60_000
        tap = {
            "api_key": emu.api_key,
            "base_url": emu.base_url,
            "start_date": millis_to_iso(end - 5 * 60_000),
            "end_date": millis_to_iso(end),
            "lag_seconds": 5,
            "poll_interval_seconds": 0.01,
            "poll_interval_max_seconds": 0.05,
            "event_time_fields": EVENT_TIME_FIELDS,
        }
        self.runs += 1
        pipe = start(
            self.scratch, tap, {"output_dir": str(output_dir), **target}, run=f"{self.runs}"
        )
        pipe.finish()
        return pipe.workdir

    def run_log(self, run_dir: Path) -> str:
        """A run's log as a user keeps it: both plugins' stderr."""
        return "".join((run_dir / f"{who}.stderr").read_text() for who in ("tap", "target"))


def _relative_dir(argument: str) -> str:
    path = Path(argument)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"the directory must be relative to the snippet's directory: {argument}")
    return argument


def _emulator(ctx: SetupContext, argument: str) -> None:
    emu = ctx.emulator()
    tap = {
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "start_date": "5 minutes ago UTC",
        "lag_seconds": 5,
        "poll_interval_seconds": 0.05,
        "poll_interval_max_seconds": 0.2,
    }
    (ctx.cwd / "config.json").write_text(json.dumps(tap, indent=2) + "\n")
    (ctx.cwd / "target.json").write_text(json.dumps({"output_dir": "out"}, indent=2) + "\n")


def _parts(ctx: SetupContext, argument: str) -> None:
    ctx.run_pipeline(ctx.cwd / _relative_dir(argument), partition_date_field="received_at")


def _iceberg(ctx: SetupContext, argument: str) -> None:
    ctx.run_pipeline(
        ctx.cwd / _relative_dir(argument),
        table_format="iceberg",
        partition_date_field="received_at",
    )


def _run_log(ctx: SetupContext, argument: str) -> None:
    run = ctx.run_pipeline(ctx.scratch / "run-log-output")
    (ctx.cwd / "run.log").write_text(ctx.run_log(run))


def _demo_output(ctx: SetupContext, argument: str) -> None:
    out = ctx.cwd / "demo-output"
    run = ctx.run_pipeline(out / "dataset", batch_size_rows=20000)
    (out / "run-1.log").write_text(ctx.run_log(run))
    config = {  # as scripts/demo.sh writes it: the API where the demo's emulator listens
        "api_key": ctx.emulator().api_key,
        "base_url": f"http://127.0.0.1:{DEMO_PORT}",
        "poll_interval_seconds": 0.05,
        "poll_interval_max_seconds": 0.2,
    }
    (out / "tap-config.json").write_text(json.dumps(config) + "\n")


def _port(ctx: SetupContext, argument: str) -> None:
    port = int(argument)
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(
                f"loopback port {port} is in use (a demo emulator still running?); the snippet "
                "starts its own server there: stop what listens on it and rerun"
            )


@dataclass(frozen=True)
class Setup:
    prepare: Callable[[SetupContext, str], None]
    argument: str | None  # what the argument names; None: the setup takes none
    description: str


SETUPS: dict[str, Setup] = {
    "emulator": Setup(
        _emulator,
        None,
        "a running emulator (default options, key emulator-key) on a free loopback port; "
        "./config.json is a tap config for it (start_date 5 minutes ago), ./target.json "
        '{"output_dir": "out"}',
    ),
    "parts": Setup(
        _parts,
        "DIR",
        "a real dataset of parts in ./DIR: tap-rapid7 | target-parquet-parts over five minutes "
        "of the emulator's four logs (streams events, logs, logsets; date= directories by "
        "received_at)",
    ),
    "iceberg": Setup(
        _iceberg,
        "DIR",
        "the same run with table_format iceberg: Iceberg tables singer.events, singer.logs, "
        "singer.logsets in ./DIR (embedded catalog ./DIR/catalog.db)",
    ),
    "run.log": Setup(
        _run_log, None, "./run.log: the stderr of both plugins of such a run (no dataset)"
    ),
    "demo-output": Setup(
        _demo_output,
        None,
        "what scripts/demo.sh leaves behind: demo-output/dataset (parts, event_time filled), "
        "demo-output/run-1.log, demo-output/tap-config.json (the API at "
        f"http://127.0.0.1:{DEMO_PORT}, emulator-key; the emulator itself stopped). The "
        "dataset holds what `tap-rapid7-emulator --seed 7` serves",
    ),
    "port": Setup(
        _port,
        "N",
        "loopback port N is free, for a snippet that starts its own server there (checked, "
        "not made: the test fails naming the port when something listens on it)",
    ),
}


def parse_setup(text: str) -> tuple[Setup, str]:
    """A marker's setup entry (``name`` or ``name argument``): ValueError if unknown or misused."""
    name, _, argument = text.strip().partition(" ")
    argument = argument.strip()
    setup = SETUPS.get(name)
    if setup is None:
        known = ", ".join(sorted(SETUPS))
        raise ValueError(f"unknown setup {text!r} (known: {known})")
    if setup.argument is None and argument:
        raise ValueError(f"setup {name!r} takes no argument, got {argument!r}")
    if setup.argument is not None and not argument:
        raise ValueError(f"setup {name!r} needs an argument: {name} {setup.argument}")
    if setup.argument == "N" and not argument.isdigit():
        raise ValueError(f"setup {name!r} needs a number, got {argument!r}")
    return setup, argument


def setup_problems(snippet: Snippet) -> list[str]:
    """What is wrong with a snippet's setup names (empty when all are known and well formed)."""
    problems: list[str] = []
    for text in snippet.setups:
        try:
            parse_setup(text)
        except ValueError as exc:
            problems.append(f"{snippet.id}: {exc}")
    return problems


def prepare(snippet: Snippet, ctx: SetupContext) -> None:
    """Make every setup the snippet's marker names, in the order it names them."""
    for text in snippet.setups:
        setup, argument = parse_setup(text)
        setup.prepare(ctx, argument)


# --- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a snippet's process ended: its exit status (None: killed at the timeout), output."""

    returncode: int | None
    stdout: str
    stderr: str
    timeout: float


def snippet_env() -> dict[str, str]:
    """The environment a user has after activating the dev venv: its bin first on PATH."""
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
    }


def run_snippet(
    snippet: Snippet, cwd: Path, scratch: Path, timeout: float = SNIPPET_TIMEOUT_SECONDS
) -> Outcome:
    """Run the snippet in ``cwd`` (its script and output files live in ``scratch``).

    It runs in a session of its own; when it ends (or at the timeout) whatever it left running
    in that session (a server started with ``&``) is killed, so nothing outlives the test.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    script = scratch / f"snippet{SUFFIXES[snippet.language]}"
    script.write_text(snippet.code, encoding="utf-8")
    out_path, err_path = scratch / "snippet.stdout", scratch / "snippet.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [*RUNNERS[snippet.language], str(script)],
            cwd=cwd,
            env=snippet_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            returncode: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _kill_session(process.pid)
            process.wait(timeout=30)
    return Outcome(
        returncode=returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        timeout=timeout,
    )


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def failure(snippet: Snippet, outcome: Outcome) -> str | None:
    """None when the snippet succeeded, else what to show: where it is, how it ended, stderr."""
    if outcome.returncode == 0:
        return None
    how = (
        f"did not finish within {outcome.timeout:g} s (killed)"
        if outcome.returncode is None
        else f"exited with status {outcome.returncode}"
    )
    return "\n".join(
        [
            f"{snippet.id}: the {snippet.language} snippet {how} (marker {snippet.marker!r})",
            "--- snippet (document lines) ---",
            *_numbered(snippet),
            "--- stderr (last 6000 characters) ---",
            outcome.stderr[-6000:].rstrip() or "(empty)",
            "--- stdout (last 2000 characters) ---",
            outcome.stdout[-2000:].rstrip() or "(empty)",
        ]
    )


def _numbered(snippet: Snippet) -> Iterable[str]:
    for offset, line in enumerate(snippet.code.splitlines(), start=1):
        yield f"{snippet.line + offset:5d}  {line}"
