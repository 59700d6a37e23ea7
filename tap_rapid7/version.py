"""The tap's own name, and the user agent it sends: that name with the distribution's version."""

from __future__ import annotations

from plugin_io.distribution import distribution_version

__all__ = ["PLUGIN_NAME", "USER_AGENT"]

PLUGIN_NAME = "tap-rapid7"  # the executable, --about's name, Meltano's plugin name
USER_AGENT = f"{PLUGIN_NAME}/{distribution_version()}"
