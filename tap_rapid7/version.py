"""The installed version of the one distribution (``tap-rapid7``) that ships every plugin here."""

from __future__ import annotations

import importlib.metadata

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "distribution_version"]

DISTRIBUTION = "tap-rapid7"  # pyproject [project] name: the tap, the target and the tools
UNKNOWN_VERSION = "0+unknown"


def distribution_version() -> str:
    """The version in the installed package metadata, or ``0+unknown`` when not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
