"""What a user reads when the target cannot write: the path, the operation and the OS error.

The SDK's last-resort handler logs only an exception's first argument, which for an
``OSError`` is the bare errno (``ERROR ... | 13``); ``OutputDirError`` carries the whole story
as its one argument instead.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputDirError", "describe_write_error", "explain_os_errors"]


class OutputDirError(OSError):
    """Writing under ``output_dir`` failed; the message names path, operation and OS error.

    Still an ``OSError`` (callers catching those keep working), but built from one string, so
    ``args[0]`` and ``str()`` are the whole message.
    """


def _operation(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "write"
    frame = frames[-1]
    return f"{frame.name} ({Path(frame.filename).name}:{frame.lineno})"


def describe_write_error(exc: OSError, output_dir: str | os.PathLike[str]) -> str:
    """One line: ``output_dir '...' is not writable: <op> failed on '<path>': <Type>: <text>``."""
    path = exc.filename if exc.filename is not None else output_dir
    detail = f"{type(exc).__name__}: {exc}"
    return (
        f"output_dir {str(output_dir)!r} is not writable (or not a directory): "
        f"{_operation(exc)} failed on {str(path)!r}: {detail}"
    )


@contextmanager
def explain_os_errors(output_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an ``OSError`` from the block as ``OutputDirError`` (the original chained)."""
    try:
        yield
    except OutputDirError:
        raise
    except OSError as exc:
        raise OutputDirError(describe_write_error(exc, output_dir)) from exc
