"""The files the one distribution is built from, copied for tests that install it elsewhere.

``pyproject.toml`` names the packages (``[tool.setuptools.packages.find] include``); the copy is
those packages plus the metadata files, read from the working tree (uncommitted changes too),
so a test installs exactly what the next commit would ship.
"""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_PATTERNS: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
METADATA_FILES = ("pyproject.toml", "README.md", "LICENSE")


def top_level_packages() -> list[str]:
    """The top-level package folders of the repository that the distribution ships."""
    return sorted(
        path.name
        for path in REPO.iterdir()
        if (path / "__init__.py").is_file()
        and any(fnmatch.fnmatch(path.name, pattern) for pattern in PACKAGE_PATTERNS)
    )


def copy_distribution_sources(destination: Path) -> None:
    """The distribution's packages and metadata files into ``destination`` (created)."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in METADATA_FILES:
        shutil.copy(REPO / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in top_level_packages():
        shutil.copytree(REPO / package, destination / package, ignore=ignore)
