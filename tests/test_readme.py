"""README and docs stay true: generated settings tables, size, layout, links, no outside refs.

- The settings tables in README.md are what `scripts/settings_tables.py` makes of each plugin's
  `--about --format=markdown` now: a setting added to a plugin without regenerating fails here.
- README.md is a front door: at most 16 KB.
- The layout tree in docs/development.md names every module the distribution ships, and
  nothing that does not exist.
- Every relative link in the tracked Markdown files resolves to a tracked file (and heading).
- No tracked file refers to documents outside the repository.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from tests.distribution_sources import top_level_packages
from tests.repo_scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_BYTES = 16 * 1024
DEVELOPMENT = ROOT / "docs" / "development.md"

# Documents that live outside this repository (spelled in two pieces so this file does not match).
OUTSIDE_REFERENCES = ("shared" + "/", "conventions" + ".md")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _settings_tables() -> ModuleType:
    return load_script("settings_tables")


@cache
def _git_ls_files() -> frozenset[str] | None:
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return frozenset(name for name in result.stdout.decode().split("\0") if name)


def tracked_files() -> frozenset[str]:
    """Paths (POSIX, relative to the root) of the files git tracks."""
    files = _git_ls_files()
    if files is None:
        pytest.skip("not a git checkout: no tracked-file list")
    return files


def _text(relative: str) -> str | None:
    """A tracked file's text, or None for binary files (and files deleted in the worktree)."""
    path = ROOT / relative
    if not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


# --- settings tables --------------------------------------------------------------------------


def test_readme_settings_tables_match_the_plugins_about_output():
    tables = _settings_tables()
    current = README.read_text(encoding="utf-8")
    fresh = tables.regenerate(current)
    diff = "\n".join(
        difflib.unified_diff(
            current.splitlines(), fresh.splitlines(), "README.md", "generated", lineterm="", n=0
        )
    )
    assert fresh == current, (
        "README.md's settings tables differ from the plugins' --about output; regenerate them "
        f"with `.venv/bin/python scripts/settings_tables.py`:\n{diff}"
    )


ABOUT = """# `tap-x`

## Capabilities

- `about`

## Settings

| Setting | Required | Default | Description |
|:--------|:--------:|:-------:|:------------|
| api_key | True | None | The key, sent as X-Api-Key |
| start_date | False | None | 'N seconds|minutes ago' or re:<regex> |
| flattening_enabled | False | None | 'True' to enable schema flattening. |
| stream_maps | False | None | Config object for stream maps capability. |
| stream_maps.__else__ | False | None | Only `__NULL__`. |

A full list of supported settings and capabilities is available by running: `tap-x --about`
"""


def test_settings_table_keeps_the_plugins_own_settings_and_escapes_cells():
    tables = _settings_tables()
    rows = tables.settings_rows(ABOUT)
    assert [row[0] for row in rows] == [
        "api_key",
        "start_date",
        "flattening_enabled",
        "stream_maps",
        "stream_maps.__else__",
    ]
    table = tables.render_table("tap-x", rows)
    assert "| `api_key` | yes |  | The key, sent as X-Api-Key |" in table
    # a `|` inside a description must not split the cell; `<regex>` is not an HTML tag
    assert r"'N seconds\|minutes ago' or re:&lt;regex&gt;" in table
    assert "| `stream_maps`" not in table
    assert "| `flattening_enabled`" not in table
    assert "Also the SDK's `flattening_enabled`, `stream_maps` (`tap-x --about`)." in table


def test_a_setting_added_to_a_plugin_makes_the_readme_stale():
    tables = _settings_tables()
    readme = "x\n<!-- settings:tap-x -->\nold\n<!-- /settings:tap-x -->\ny\n"
    table = tables.render_table("tap-x", tables.settings_rows(ABOUT))
    current = tables.replace_between_markers(readme, "tap-x", table)
    added = ABOUT.replace(
        "| api_key |", "| lag_seconds | False | 300 | Stay this far behind now |\n| api_key |"
    )
    fresh = tables.replace_between_markers(
        current, "tap-x", tables.render_table("tap-x", tables.settings_rows(added))
    )
    assert fresh != current
    assert "| `lag_seconds` |  | `300` | Stay this far behind now |" in fresh
    assert fresh.startswith("x\n<!-- settings:tap-x -->\n| setting |")
    assert fresh.endswith("\n<!-- /settings:tap-x -->\ny\n")


def test_settings_tables_refuse_a_readme_without_markers():
    tables = _settings_tables()
    with pytest.raises(ValueError, match="settings:tap-x"):
        tables.replace_between_markers("no markers here\n", "tap-x", "table")


# --- size and layout --------------------------------------------------------------------------


def test_readme_is_a_front_door_of_at_most_16_kb():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes (at most {README_MAX_BYTES}): move details to docs/"
    )


def _layout_entries() -> list[str]:
    """The paths the module map names (two spaces of indent per level)."""
    text = DEVELOPMENT.read_text(encoding="utf-8")
    match = re.search(r"<!-- layout -->\n```text\n(.*?)\n```\n<!-- /layout -->", text, re.DOTALL)
    assert match, "docs/development.md has no ```text tree between the layout markers"
    stack: list[str] = []
    entries: list[str] = []
    for line in match.group(1).splitlines():
        name = line.split()[0]
        depth = (len(line) - len(line.lstrip(" "))) // 2
        assert depth <= len(stack), f"layout line indented too far: {line!r}"
        del stack[depth:]
        path = "/".join([*stack, name.rstrip("/")])
        entries.append(path)
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
    return entries


def _distribution_modules() -> set[str]:
    """Every package and module that the distribution ships (pyproject.toml's packages)."""
    packages = set(top_level_packages())
    wanted: set[str] = set()
    for path in tracked_files():
        parts = path.split("/")
        if parts[0] in packages and path.endswith(".py"):
            wanted.update("/".join(parts[:i]) for i in range(1, len(parts)))  # packages
            if parts[-1] != "__init__.py":
                wanted.add(path)
    return wanted


def test_module_map_names_every_module_and_only_real_ones():
    entries = _layout_entries()
    missing_on_disk = [entry for entry in entries if not (ROOT / entry).exists()]
    assert not missing_on_disk, f"the module map names paths that do not exist: {missing_on_disk}"
    not_drawn = sorted(_distribution_modules() - set(entries))
    assert not not_drawn, f"the module map (docs/development.md) lacks a line for: {not_drawn}"


# --- links and references ---------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for _hashes, title in _HEADING.findall(_FENCE.sub("", markdown)):
        slug = _slug(title)
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


def _markdown_files() -> list[str]:
    """Tracked Markdown files (none outside a git checkout: the link tests then do not run)."""
    return sorted(path for path in _git_ls_files() or () if path.endswith(".md"))


def test_markdown_files_are_found():
    files = tracked_files()
    assert "README.md" in files
    assert any(path.startswith("docs/") and path.endswith(".md") for path in files)


@pytest.mark.parametrize("document", _markdown_files())
def test_relative_links_resolve_to_tracked_files_and_headings(document):
    text = _text(document)
    if text is None:
        pytest.skip(f"{document} is not in the worktree")
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    broken: list[str] = []
    for target in _LINK.findall(prose):
        if _SCHEME.match(target):
            continue  # http(s), mailto: not checked here
        path_part, _, anchor = target.partition("#")
        if path_part:
            resolved = (ROOT / document).parent / path_part
            try:
                relative = resolved.resolve().relative_to(ROOT).as_posix()
            except ValueError:
                broken.append(f"{target} (outside the repository)")
                continue
            is_dir = any(path.startswith(relative.rstrip("/") + "/") for path in tracked_files())
            if relative not in tracked_files() and not is_dir:
                broken.append(f"{target} (no tracked file {relative}; new files need `git add`)")
                continue
        else:
            relative = document
        if anchor and relative.endswith(".md"):
            target_text = _text(relative) or ""
            if anchor not in _anchors(target_text):
                broken.append(f"{target} (no heading #{anchor} in {relative})")
    assert not broken, f"{document}: broken relative links: {broken}"


def test_no_tracked_file_refers_to_documents_outside_the_repository():
    offenders: list[str] = []
    for path in sorted(tracked_files()):
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(reference in line for reference in OUTSIDE_REFERENCES):
                offenders.append(f"{path}:{number}: {line.strip()[:120]}")
    assert not offenders, "files refer to documents outside the repository:\n" + "\n".join(
        offenders
    )
