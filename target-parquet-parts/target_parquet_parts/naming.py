"""Names on disk: sanitized stream directories and part names that are unique forever.

A stream name comes from the tap and can hold anything (``test:SpecialChars!in?attributes``,
``../../etc``). It becomes exactly one directory level under ``output_dir``: every character
outside ``[A-Za-z0-9_.-]`` becomes ``_``, leading dots are replaced (no ``.``/``..``, no hidden
directory), and when the name had to change a short hash of the original is appended, so two
different streams never share a directory. ``resolve_inside`` then checks the final path really
is inside ``output_dir``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import secrets
from pathlib import Path

__all__ = [
    "PART_GLOB",
    "PART_PREFIX",
    "TEMP_SUFFIX",
    "is_temp_part",
    "new_part_name",
    "resolve_inside",
    "sanitize_stream_name",
    "temp_name_for",
]

PART_PREFIX = "part"
PART_GLOB = f"{PART_PREFIX}-*.parquet"  # complete parts only (temporary files start with ".")
TEMP_SUFFIX = ".tmp"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_MAX_NAME = 120


def sanitize_stream_name(stream_name: str) -> str:
    """Return a single, safe directory name for ``stream_name`` (stable across runs)."""
    safe = _UNSAFE.sub("_", stream_name)
    stripped = safe.lstrip(".")
    safe = "_" * (len(safe) - len(stripped)) + stripped
    if not safe:
        safe = "_"
    if safe != stream_name or len(safe) > _MAX_NAME:
        digest = hashlib.sha256(stream_name.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe[:_MAX_NAME]}-{digest}"
    return safe


def new_part_name(now: datetime.datetime | None = None) -> str:
    """``part-{UTC time to the microsecond}-{128-bit random id}.parquet``: never reused."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    return f"{PART_PREFIX}-{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(16)}.parquet"


def temp_name_for(part_name: str) -> str:
    """A temporary name that no reader takes for a part: hidden and not ending in .parquet."""
    return f".{part_name}{TEMP_SUFFIX}"


def is_temp_part(file_name: str) -> bool:
    """True for a temporary file this target writes before the rename."""
    return file_name.startswith(f".{PART_PREFIX}-") and file_name.endswith(TEMP_SUFFIX)


def resolve_inside(root: Path, *parts: str) -> Path:
    """Join ``parts`` under ``root``; raise if the result would leave ``root``."""
    root_abs = Path(os.path.abspath(root))
    candidate = Path(os.path.abspath(root_abs.joinpath(*parts)))
    if os.path.commonpath([root_abs, candidate]) != str(root_abs):
        msg = f"refusing to write outside output_dir {root_abs}: {candidate}"
        raise ValueError(msg)
    return candidate
