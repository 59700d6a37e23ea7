"""meltano.yml declares each plugin's settings for Meltano; they must be the plugins' own.

The plugins' JSON Schemas are the one source (``--about`` and the README's tables come from
them); Meltano needs its own declaration for local plugins, so this test holds the two equal:
same names, and a kind that means the schema's type.
"""

import copy
from pathlib import Path

import pytest
import yaml

from tap_rapid7.tap import TapRapid7
from target_parquet_parts.target import TargetParquetParts

MELTANO_YML = Path(__file__).resolve().parents[1] / "meltano.yml"
# Meltano's setting kinds for each JSON Schema type (string settings may be plain, a date,
# options, or a password).
KINDS = {
    "integer": {"integer"},
    # no kind: Meltano 4.4.1 turns a `kind: decimal` value given as text into a Decimal it
    # cannot serialize, and `kind: integer` truncates 0.5 (meltano.yml says so too)
    "number": {None},
    "boolean": {"boolean"},
    "array": {"array"},
    "object": {"object"},
    "string": {None, "string", "date_iso8601", "options", "password"},
}


def _plugin(kind: str, name: str) -> dict:
    project = yaml.safe_load(MELTANO_YML.read_text(encoding="utf-8"))
    return next(plugin for plugin in project["plugins"][kind] if plugin["name"] == name)


def _type(prop: dict) -> str:
    types = prop.get("type", "string")
    types = [types] if isinstance(types, str) else types
    return next(kind for kind in types if kind != "null")


def _full_schema(plugin: type[TapRapid7] | type[TargetParquetParts]) -> dict:
    """The plugin's settings with the SDK's built-in ones, as ``--about`` lists them."""
    schema = copy.deepcopy(plugin.config_jsonschema)
    plugin.append_builtin_config(schema)
    return schema


@pytest.mark.parametrize(
    ("kind", "name", "schema"),
    [
        ("extractors", "tap-rapid7", _full_schema(TapRapid7)),
        ("loaders", "target-parquet-parts", _full_schema(TargetParquetParts)),
    ],
)
def test_meltano_yml_declares_each_plugin_setting_with_a_matching_kind(kind, name, schema):
    declared = {setting["name"]: setting for setting in _plugin(kind, name)["settings"]}
    # the SDK's standard settings too: Meltano passes a plugin only the settings it declares
    assert set(schema["properties"]) - set(declared) == set(), f"{name}: missing in meltano.yml"
    unknown = set(declared) - set(schema["properties"])
    assert unknown == set(), f"{name}: unknown in meltano.yml"
    for key, setting in declared.items():
        assert setting.get("kind") in KINDS[_type(schema["properties"][key])], (name, key)


def _environment(name: str) -> dict:
    project = yaml.safe_load(MELTANO_YML.read_text(encoding="utf-8"))
    return next(env for env in project["environments"] if env["name"] == name)


def test_split_jobs_inherit_the_tap_and_read_disjoint_logs_into_one_iceberg_table():
    project = yaml.safe_load(MELTANO_YML.read_text(encoding="utf-8"))
    parts = [
        p for p in project["plugins"]["extractors"] if p["name"].startswith("tap-rapid7--part")
    ]
    assert [p["name"] for p in parts] == [f"tap-rapid7--part{n}" for n in (1, 2, 3)]
    lake = _plugin("extractors", "tap-rapid7--lake")
    assert lake["inherit_from"] == "tap-rapid7"
    assert "[iceberg]" in lake["pip_url"]  # reconcile reads the table
    for part in parts:
        # No pip_url and no settings of their own: one venv (the lake's), the tap's settings.
        assert part["inherit_from"] == "tap-rapid7--lake"
        assert "pip_url" not in part
        assert "settings" not in part
    loader = _plugin("loaders", "target-parquet-parts--iceberg")
    assert loader["inherit_from"] == "target-parquet-parts"
    assert loader["config"]["table_format"] == "iceberg"
    assert "[iceberg" in loader["pip_url"]
    # dev: every part has logs, no log in two parts (a part without log_ids reads every log).
    dev = {
        p["name"]: p.get("config", {})
        for p in _environment("dev")["config"]["plugins"]["extractors"]
    }
    logs = [dev[part["name"]]["log_ids"] for part in parts]
    assert all(logs)
    assert len({log for group in logs for log in group}) == sum(len(group) for group in logs)
    jobs = {job["name"]: job["tasks"] for job in project["jobs"]}
    assert jobs == {
        f"lake-part{n}": [f"tap-rapid7--part{n} target-parquet-parts--iceberg"] for n in (1, 2, 3)
    }
    assert {s["job"] for s in project["schedules"]} == set(jobs)
