"""The tap's name and installed version, from its distribution's package metadata."""

from __future__ import annotations

import importlib.metadata

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "USER_AGENT", "distribution_version"]

DISTRIBUTION = "tap-rapid7"  # tap-rapid7/pyproject.toml [project] name
UNKNOWN_VERSION = "0+unknown"


def distribution_version() -> str:
    """The version in the installed package metadata, or ``0+unknown`` when not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


USER_AGENT = f"{DISTRIBUTION}/{distribution_version()}"
