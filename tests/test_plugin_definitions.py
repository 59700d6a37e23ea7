"""The plugins' Meltano definitions (meltano-hub/*.yml, meltano.yml) are their --about.

``scripts/plugin_definitions.py`` writes both from each plugin's ``--about --format=json``; a
setting, capability or command changed without rerunning it fails here. The conversions from
JSON Schema to Meltano's setting kinds are checked on their own, and the user-facing promises:
the SDK's standard settings are declared (Meltano passes only declared settings, so an
undeclared ``TAP_RAPID7_STREAM_MAPS`` would be dropped without a word), the API key is
sensitive, and the ``pip_url`` names no distribution a stranger could publish on the index.
"""

from __future__ import annotations

import difflib
import shlex
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SDK_STANDARD = {
    "tap-rapid7": {
        "stream_maps", "stream_map_config", "faker_config", "flattening_enabled",
        "flattening_max_depth",
    },
    "target-parquet-parts": {
        "stream_maps", "stream_map_config", "faker_config", "flattening_enabled",
        "flattening_max_depth", "add_record_metadata", "load_method", "batch_size_rows",
        "validate_records",
    },
}  # fmt: skip


def definitions_script() -> ModuleType:
    return load_script("plugin_definitions")


@cache
def hub(plugin: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "meltano-hub" / f"{plugin}.yml").read_text(encoding="utf-8"))


def meltano_plugin(plugin: str) -> dict[str, Any]:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    kind = definitions_script().PLUGINS[plugin]["plugin_type"]
    return next(entry for entry in project["plugins"][kind] if entry["name"] == plugin)


def test_hub_definitions_and_meltano_yml_are_what_the_plugins_about_says():
    stale = []
    for path, fresh in definitions_script().expected_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != fresh:
            diff = difflib.unified_diff(
                current.splitlines(), fresh.splitlines(), str(path), "generated", lineterm=""
            )
            stale.append("\n".join(list(diff)[:40]))
    assert not stale, (
        "stale plugin definitions; rerun `.venv/bin/python scripts/plugin_definitions.py`:\n"
        + "\n".join(stale)
    )


@pytest.mark.parametrize("plugin", ["tap-rapid7", "target-parquet-parts"])
def test_meltano_yml_declares_what_the_hub_definition_declares(plugin):
    local, shipped = meltano_plugin(plugin), hub(plugin)
    for key in ("namespace", "executable", *definitions_script().GENERATED_IN_MELTANO_YML):
        assert local[key] == shipped[key], (plugin, key)


@pytest.mark.parametrize("plugin", ["tap-rapid7", "target-parquet-parts"])
def test_every_sdk_standard_setting_is_declared_with_its_kind(plugin):
    settings = {entry["name"]: entry for entry in hub(plugin)["settings"]}
    assert SDK_STANDARD[plugin] <= set(settings)
    for name in ("stream_maps", "stream_map_config", "faker_config"):
        assert settings[name]["kind"] == "object"  # JSON text from env/config set is parsed
    assert settings["flattening_enabled"]["kind"] == "boolean"
    assert settings["flattening_max_depth"]["kind"] == "integer"
    for entry in settings.values():
        assert entry["label"]
        assert entry.get("description"), (plugin, entry["name"])


def test_the_tap_declares_no_batch_config():
    """The tap refuses it (its STATE could pass the batch files): nothing may offer it."""
    names = {entry["name"] for entry in hub("tap-rapid7")["settings"]}
    assert "batch_config" not in names
    assert "batch" not in hub("tap-rapid7")["capabilities"]


def test_the_api_key_is_sensitive_and_nothing_else_is():
    sensitive = [s["name"] for p in SDK_STANDARD for s in hub(p)["settings"] if s.get("sensitive")]
    assert sensitive == ["api_key"]


@pytest.mark.parametrize("plugin", ["tap-rapid7", "target-parquet-parts"])
def test_pip_url_installs_the_one_distribution_from_a_source_the_user_names(plugin):
    """A bare name would be looked up on the public index, where anyone may register it."""
    args = shlex.split(hub(plugin)["pip_url"])
    assert len(args) == 1
    requirement = args[0]
    name, _, source = requirement.partition(" @ ")
    assert name.split("[")[0] == "tap-rapid7"
    assert source == "${TAP_RAPID7_SOURCE}"


def test_capabilities_are_the_plugins_own():
    script = definitions_script()
    for plugin in script.PLUGINS:
        assert hub(plugin)["capabilities"] == sorted(script.about(plugin)["capabilities"])


def test_schema_properties_become_meltano_settings():
    setting = definitions_script().setting
    assert setting("api_key", {"type": ["string"], "secret": True, "description": "The  key"}) == {
        "name": "api_key",
        "label": "API Key",
        "kind": "string",
        "description": "The key",
        "sensitive": True,
    }
    assert setting("region", {"type": ["string", "null"], "enum": ["us", "eu"], "default": "us"})[
        "options"
    ] == [{"label": "us", "value": "us"}, {"label": "eu", "value": "eu"}]
    assert setting("start_date", {"type": ["string"], "format": "date-time"})["kind"] == (
        "date_iso8601"
    )
    assert setting("log_ids", {"type": ["array", "null"]})["label"] == "Log IDs"
    # numbers carry no kind (Meltano 4.4.1 cannot serialize a decimal given as text)
    assert "kind" not in setting("lag_seconds", {"type": ["number", "null"], "default": 300})
    assert setting("n", {"type": "integer", "title": "Count"})["label"] == "Count"


def test_a_meltano_yml_without_the_generated_block_is_refused():
    with pytest.raises(ValueError, match="tap-rapid7"):
        definitions_script().regenerate_meltano_yml("plugins: {}\n", {"tap-rapid7": {}})
