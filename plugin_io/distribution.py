"""The one distribution both plugins ship in: its name, and the version its metadata records.

The tap and the target are two Singer plugins with names of their own (``--about``, the user
agent), installed together from one distribution (``pyproject.toml``); each reports that
distribution's version, so a run's logs tell exactly which release wrote a dataset.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["DISTRIBUTION", "UNKNOWN_VERSION", "distribution_version", "install_hint"]

DISTRIBUTION = "tap-rapid7"  # pyproject.toml [project] name
UNKNOWN_VERSION = "0+unknown"


def distribution_version() -> str:
    """The version in the installed package metadata, or ``0+unknown`` when not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def install_hint(extra: str) -> str:
    """The end of an error line for a missing optional part: the extra that brings it."""
    return f"install the '{extra}' extra: pip install '{DISTRIBUTION}[{extra}]'"
