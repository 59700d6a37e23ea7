"""The target's distribution name: the SDK reads its version from that package's metadata."""

from __future__ import annotations

__all__ = ["DISTRIBUTION"]

DISTRIBUTION = "target-parquet-parts"  # target-parquet-parts/pyproject.toml [project] name
