"""The target's own name; its version is the distribution's (``plugin_io.distribution``)."""

from __future__ import annotations

__all__ = ["PLUGIN_NAME"]

PLUGIN_NAME = "target-parquet-parts"  # the executable, --about's name, Meltano's plugin name
