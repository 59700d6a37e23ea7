"""The one distribution both plugins ship in: its name, and the version its metadata records.

The tap and the target are two Singer plugins with names of their own (``--about``, the user
agent), installed together from one distribution (``pyproject.toml``); each reports that
distribution's version, so a run's logs tell exactly which release wrote a dataset.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "distribution_version"]

DISTRIBUTION = "tap-rapid7"  # pyproject.toml [project] name
UNKNOWN_VERSION = "0+unknown"


def distribution_version() -> str:
    """The version in the installed package metadata, or ``0+unknown`` when not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
