"""Regenerate README.md's settings tables from each plugin's `--about --format=markdown`.

The plugins' settings schemas are the one source of the settings: this script runs the installed
`tap-rapid7` and `target-parquet-parts` (next to the running Python, else on PATH), takes the
settings table out of their `--about` output, leaves out the SDK's generic capability settings
(stream maps, flattening, batch: named in a line under the table) and writes the result between
the marker comments in README.md:

    <!-- settings:tap-rapid7 -->
    ...
    <!-- /settings:tap-rapid7 -->

Run it after adding or changing a setting:

    .venv/bin/python scripts/settings_tables.py          # rewrite README.md
    .venv/bin/python scripts/settings_tables.py --check  # exit 1 if README.md is stale

tests/test_readme.py runs the same comparison.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from singer_sdk.helpers import capabilities

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PLUGINS = ("tap-rapid7", "target-parquet-parts")


def sdk_capability_settings() -> frozenset[str]:
    """Settings the SDK adds with a capability (stream maps, flattening, batch, the target's
    batch size, validation, load method...): the same in every SDK plugin, listed by `--about`,
    named in one line under the README's table instead of a row each."""
    names: set[str] = set()
    for value in vars(capabilities).values():
        if isinstance(value, dict) and isinstance(value.get("properties"), dict):
            names.update(value["properties"])
    return frozenset(names)


def plugin_executable(plugin: str) -> str:
    """The plugin's console script beside this interpreter (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / plugin
    if beside.exists():
        return str(beside)
    found = shutil.which(plugin)
    if found is None:
        raise SystemExit(
            f"{plugin} is not installed (run: source scripts/_env.sh && install_dev_env)"
        )
    return found


def about_markdown(plugin: str) -> str:
    """`<plugin> --about --format=markdown`, as the installed plugin prints it."""
    return about_output(plugin, "markdown")


def about_output(plugin: str, about_format: str) -> str:
    """`<plugin> --about --format=<about_format>`, as the installed plugin prints it."""
    result = subprocess.run(
        [plugin_executable(plugin), "--about", f"--format={about_format}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


def settings_rows(markdown: str) -> list[tuple[str, str, str, str]]:
    """The rows (setting, required, default, description) of the `## Settings` table."""
    lines = markdown.splitlines()
    try:
        start = lines.index("## Settings")
    except ValueError:
        raise ValueError("no '## Settings' section in the --about output") from None
    rows: list[tuple[str, str, str, str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("| ") or line.startswith(("| Setting ", "|:-")):
            continue
        # The SDK does not escape `|` inside a description: split off the first three cells only.
        cells = line[2:].removesuffix(" |").split(" | ", 3)
        if len(cells) != 4:
            raise ValueError(f"unexpected settings row: {line!r}")
        name, required, default, description = (cell.strip() for cell in cells)
        rows.append((name, required, default, description))
    if not rows:
        raise ValueError("empty settings table in the --about output")
    return rows


def is_sdk_generic(name: str) -> bool:
    """A capability setting every SDK plugin shares (its dotted sub-settings too)."""
    return name.split(".", 1)[0] in sdk_capability_settings()


def _cell(text: str) -> str:
    """Escape a table cell: `|` always, `<`/`>` outside code spans (else read as HTML tags)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def render_table(plugin: str, rows: Iterable[tuple[str, str, str, str]]) -> str:
    """The README's table for one plugin, and a line naming the SDK settings left out."""
    out = [
        "| setting | required | default | description |",
        "| --- | --- | --- | --- |",
    ]
    generic: list[str] = []
    for name, required, default, description in rows:
        if is_sdk_generic(name):
            if "." not in name:
                generic.append(f"`{name}`")
            continue
        shown_default = "" if default == "None" else f"`{default}`"
        out.append(
            f"| `{name}` | {'yes' if required == 'True' else ''} | {_cell(shown_default)} "
            f"| {_cell(description)} |"
        )
    if generic:
        flattening = [name for name in generic if name.startswith("`flattening_")]
        if len(flattening) > 1:  # one entry for the family
            generic = [n for n in generic if n not in flattening[1:]]
            generic[generic.index(flattening[0])] = "`flattening_*`"
        out.append("")
        out.append(f"Also the SDK's {', '.join(generic)} (`{plugin} --about`).")
    return "\n".join(out)


def replace_between_markers(text: str, plugin: str, body: str) -> str:
    """Put ``body`` between the plugin's marker comments in ``text``."""
    name = re.escape(plugin)
    pattern = re.compile(
        rf"(<!-- settings:{name} -->\n)(?:.*?\n)?(<!-- /settings:{name} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"README.md has no <!-- settings:{plugin} --> ... markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1)


def regenerate(text: str, abouts: Mapping[str, str] | None = None) -> str:
    """``text`` (README.md) with every plugin's table rebuilt from its `--about` output."""
    for plugin in PLUGINS:
        about = abouts[plugin] if abouts is not None else about_markdown(plugin)
        text = replace_between_markers(text, plugin, render_table(plugin, settings_rows(about)))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    fresh = regenerate(current)
    if args.check:
        if fresh != current:
            print("README.md settings tables are stale: run scripts/settings_tables.py")
            return 1
        print("README.md settings tables are current")
        return 0
    if fresh != current:
        README.write_text(fresh, encoding="utf-8")
        print("README.md: settings tables regenerated")
    else:
        print("README.md: settings tables already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
