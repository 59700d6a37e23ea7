"""Settings typed by their JSON Schema: booleans, which both plugins read the same way."""

from __future__ import annotations

import pytest

from plugin_io.settings_types import SettingError, SettingTypes

SCHEMA = {"properties": {"flag": {"type": ["boolean", "null"]}, "size": {"type": "integer"}}}
TYPES = SettingTypes(SCHEMA, ["flag", "size"], env_prefix="PLUGIN_")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        *[(True, True), ("true", True), (" Yes ", True), ("1", True), ("on", True)],
        *[(False, False), ("FALSE", False), ("0", False), ("no", False), ("off", False)],
    ],
)
def test_a_boolean_from_json_or_text(raw, value):
    assert TYPES.values({"flag": raw}) == {"flag": value}
    assert TYPES.from_env({"PLUGIN_FLAG": str(raw)})["flag"] is value


def test_text_from_meltano_becomes_the_boolean_and_bad_text_is_left_for_the_schema_check():
    assert TYPES.numbers_from_text({"flag": "false", "size": "3"}) == {"flag": False, "size": 3}
    assert TYPES.numbers_from_text({"flag": "maybe"}) == {}  # the schema check names it


@pytest.mark.parametrize("raw", ["maybe", 2, 0.0])
def test_a_value_that_is_no_boolean_is_one_error_naming_the_variable(raw):
    with pytest.raises(SettingError) as raised:
        TYPES.from_env({"PLUGIN_FLAG": str(raw)})
    assert str(raised.value) == f"PLUGIN_FLAG: expected a boolean (true or false), got {str(raw)!r}"
    with pytest.raises(SettingError, match=r"^setting flag: expected a boolean"):
        TYPES.values({"flag": raw})
