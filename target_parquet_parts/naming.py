"""Names on disk: sanitized stream directories and part names that are unique forever.

A stream name comes from the tap and can hold anything (``test:SpecialChars!in?attributes``,
``../../etc``). It becomes exactly one directory level under ``output_dir``: every character
outside ``[A-Za-z0-9_.-]`` becomes ``_``, leading dots are replaced (no ``.``/``..``, no hidden
directory), a name the target keeps for itself (``_journal``, in any case) is not taken, and when
the name had to change a short hash of the original is appended. Two streams whose directories
would still be the same, compared case-insensitively as macOS and Windows filesystems do (``a/b``
and a stream literally named ``a_b-<hash>``, or ``Events`` and ``events``), are refused when the
second one's SCHEMA arrives (``StreamDirectories``): two writers in one directory would remove each
other's temporary files.

Symbolic links: ``resolve_inside`` resolves every existing component below ``output_dir``
(``realpath``) and refuses a path that leads outside it, dangling links included; the target's own
files (journal, lock) are opened with ``O_NOFOLLOW`` (``open_no_follow``), so a link there is
refused too. ``output_dir`` itself may be a link: the user chose it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import secrets
from pathlib import Path

from target_parquet_parts.errors import UnsafePathError

__all__ = [
    "JOURNAL_DIR",
    "PART_GLOB",
    "PART_PREFIX",
    "RESERVED_NAMES",
    "TEMP_SUFFIX",
    "StreamDirectories",
    "StreamDirectoryCollisionError",
    "is_part_path",
    "is_temp_part",
    "new_part_name",
    "open_no_follow",
    "resolve_inside",
    "sanitize_stream_name",
    "temp_name_for",
]

PART_PREFIX = "part"
PART_GLOB = f"{PART_PREFIX}-*.parquet"  # complete parts only (temporary files start with ".")
TEMP_SUFFIX = ".tmp"
JOURNAL_DIR = "_journal"
# Entries of output_dir the target keeps for itself: never a stream's directory.
RESERVED_NAMES = frozenset({JOURNAL_DIR})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_MAX_NAME = 120


class StreamDirectoryCollisionError(ValueError):
    """Two streams would write into one directory."""


class StreamDirectories:
    """The directory each stream of this run writes to; one stream per directory."""

    def __init__(self) -> None:
        self._owners: dict[str, tuple[str, str]] = {}

    def claim(self, stream_name: str, directory_name: str, where: str = "") -> None:
        """Record that ``stream_name`` writes to ``directory_name``; refuse a second stream."""
        key = directory_name.casefold()
        owner, owner_dir = self._owners.setdefault(key, (stream_name, directory_name))
        if owner == stream_name:
            return
        same = ""
        if owner_dir != directory_name:
            same = f" ('{owner_dir}', compared case-insensitively)"
        msg = (
            f"{where}stream {stream_name!r} would write to directory '{directory_name}', already "
            f"the directory of stream {owner!r}{same}; two streams cannot share a directory "
            "under output_dir. Rename one of them (for example with a stream map alias)"
        )
        raise StreamDirectoryCollisionError(msg)


def sanitize_stream_name(stream_name: str) -> str:
    """Return a single, safe directory name for ``stream_name`` (stable across runs)."""
    safe = _UNSAFE.sub("_", stream_name)
    stripped = safe.lstrip(".")
    safe = "_" * (len(safe) - len(stripped)) + stripped
    if not safe:
        safe = "_"
    if safe != stream_name or len(safe) > _MAX_NAME or safe.casefold() in RESERVED_NAMES:
        digest = hashlib.sha256(stream_name.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe[:_MAX_NAME]}-{digest}"
    return safe


def new_part_name(now: datetime.datetime | None = None) -> str:
    """``part-{UTC time to the microsecond}-{128-bit random id}.parquet``: never reused."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    return f"{PART_PREFIX}-{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(16)}.parquet"


def is_part_path(relative: str) -> bool:
    """A path relative to output_dir that names a part: plain segments, ``part-*.parquet``."""
    segments = relative.split("/")
    name = segments[-1]
    return (
        all(segment not in ("", ".", "..") for segment in segments)
        and name.startswith(f"{PART_PREFIX}-")
        and name.endswith(".parquet")
    )


def temp_name_for(part_name: str) -> str:
    """A temporary name that no reader takes for a part: hidden and not ending in .parquet."""
    return f".{part_name}{TEMP_SUFFIX}"


def is_temp_part(file_name: str) -> bool:
    """True for a temporary file this target writes before the rename."""
    return file_name.startswith(f".{PART_PREFIX}-") and file_name.endswith(TEMP_SUFFIX)


def resolve_inside(root: Path, *parts: str) -> Path:
    """The real path of ``parts`` joined under ``root``; refuse one that leads outside ``root``.

    Every existing component is resolved, so a symbolic link below ``root`` that points outside
    it (dangling or not) is refused, naming the link; a link that stays inside is followed.
    """
    real_root = Path(os.path.realpath(root))
    candidate = real_root.joinpath(*parts)
    real = Path(os.path.realpath(candidate))
    if real == real_root or real_root in real.parents:
        return real
    link = _first_link(real_root, candidate)
    if link is None:
        msg = f"refusing to write outside output_dir '{real_root}': '{candidate}' is '{real}'"
    else:
        target = os.readlink(link)
        resolved = "" if target == str(real) else f" (resolving to '{real}')"
        msg = (
            f"refusing to write outside output_dir '{real_root}': '{link}' is a symbolic link to "
            f"'{target}'{resolved}; the target only writes inside output_dir: remove the link, "
            "or set output_dir to where the data should go"
        )
    raise UnsafePathError(msg)


def _first_link(root: Path, path: Path) -> Path | None:
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` for the target's own files: a symbolic link there is refused, not followed."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if not path.is_symlink():
            raise
        msg = (
            f"'{path}' is a symbolic link (to '{os.readlink(path)}'): the target keeps its own "
            "files under output_dir and does not follow links there; remove the link"
        )
        raise UnsafePathError(msg) from exc
