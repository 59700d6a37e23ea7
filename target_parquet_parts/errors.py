"""What a user reads when the target cannot write: the path, the operation and the OS error.

The SDK's last-resort handler logs only an exception's first argument, which for an
``OSError`` is the bare errno (``ERROR ... | 28``). The errors here carry the whole story as their
one argument instead: the errno's name and text, the path, and what the target was doing.
"""

from __future__ import annotations

import errno
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "DescribedOSError",
    "OutputDirError",
    "UnreadablePartError",
    "UnsafePathError",
    "describe_os_error",
    "describe_write_error",
    "explain_os_errors",
]


class DescribedOSError(OSError):
    """An ``OSError`` whose one argument is a complete message (``args[0]`` and ``str()``).

    Still an ``OSError`` (callers catching those keep working). Built from one string (setting
    ``errno`` would make ``str()`` the bare ``[Errno n]`` form again); the error it describes is
    its ``__cause__``.
    """


class OutputDirError(DescribedOSError):
    """Writing under ``output_dir`` failed; the message names path, operation and OS error."""


class UnsafePathError(ValueError):
    """A path under ``output_dir`` leads outside it (a symbolic link) or is a link where the
    target keeps its own files; nothing is written there."""


class UnreadablePartError(RuntimeError):
    """A part just written does not open (its footer cannot be read back); never published."""


def describe_os_error(exc: OSError) -> str:
    """``PermissionError: [Errno 13] Permission denied: '/x' (EACCES)``: type, text, path, name."""
    text = f"{type(exc).__name__}: {exc}"
    name = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
    return f"{text} ({name})" if name else text


def _operation(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "write"
    frame = frames[-1]
    return f"{frame.name} ({Path(frame.filename).name}:{frame.lineno})"


def describe_write_error(exc: OSError, output_dir: str | os.PathLike[str]) -> str:
    """One line: ``output_dir '...' is not writable: <op> failed on '<path>': <Type>: <text>``."""
    path = exc.filename if exc.filename is not None else output_dir
    return (
        f"output_dir {str(output_dir)!r} is not writable (or not a directory): "
        f"{_operation(exc)} failed on {str(path)!r}: {describe_os_error(exc)}"
    )


@contextmanager
def explain_os_errors(output_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an ``OSError`` from the block as ``OutputDirError`` (the original chained)."""
    try:
        yield
    except DescribedOSError:
        raise
    except OSError as exc:
        raise OutputDirError(describe_write_error(exc, output_dir)) from exc
