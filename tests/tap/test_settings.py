"""The tap's settings: one schema, one typed object, equal defaults, conversions in one place."""

import dataclasses
from decimal import Decimal

import pytest

from tap_rapid7.settings import CONFIG_SCHEMA, SettingError, TapSettings, config_from_env
from tap_rapid7.tap import TapRapid7


def test_the_typed_settings_and_the_schema_declare_the_same_settings_and_defaults():
    properties = CONFIG_SCHEMA["properties"]
    fields = {field.name: field for field in dataclasses.fields(TapSettings)}
    assert set(fields) == set(properties)
    for name, prop in properties.items():
        if "default" in prop:
            assert fields[name].default == prop["default"], name
    declared = TapRapid7.config_jsonschema["properties"]
    assert all(declared[name] == prop for name, prop in properties.items())


def test_from_config_converts_the_sdk_s_decimals_and_lists_once():
    settings = TapSettings.from_config(
        {
            "api_key": "k",
            "lag_seconds": Decimal("0.5"),
            "per_page": Decimal(100),
            "log_ids": ["a", "b", "a"],
            "unknown_extra": 1,
        }
    )
    assert settings.lag_seconds == 0.5
    assert isinstance(settings.lag_seconds, float)
    assert settings.per_page == 100
    assert isinstance(settings.per_page, int)
    assert settings.log_ids == ("a", "b", "a")
    assert settings.logs == ["a", "b"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"per_page": 2.5}, "setting per_page: expected an integer, got 2.5"),
        ({"lag_seconds": "soon"}, "setting lag_seconds: expected a number, got 'soon'"),
        ({"log_ids": "abc"}, "setting log_ids: expected an array"),
    ],
)
def test_a_value_that_is_not_its_type_names_the_setting(config, message):
    with pytest.raises(SettingError, match=message):
        TapSettings.from_config({"api_key": "k", **config})


def test_environment_values_are_typed_by_the_schema():
    config = config_from_env(
        {
            "TAP_RAPID7_LAG_SECONDS": "0.5",
            "TAP_RAPID7_LOG_IDS": "a, b",
            "TAP_RAPID7_EVENT_TIME_FIELDS": "re:^(\\S+),x",
            "TAP_RAPID7_UNKNOWN": "1",
            "HOME": "/root",
        }
    )
    assert config == {
        "lag_seconds": 0.5,
        "log_ids": ("a", "b"),
        "event_time_fields": ("re:^(\\S+),x",),
    }


def test_numbers_given_as_text_pass_the_schema_check_as_numbers():
    """Meltano hands kind-less settings from the environment over as text ("0.5")."""
    tap = TapRapid7(
        config={
            "api_key": "k",
            "start_date": "2024-01-01T00:00:00Z",
            "lag_seconds": "0.5",
            "per_page": "100",
        },
        validate_config=True,
    )
    assert tap.settings.lag_seconds == 0.5
    assert tap.settings.per_page == 100


def test_text_that_is_not_a_number_is_refused_naming_the_setting():
    from singer_sdk.exceptions import ConfigValidationError

    with pytest.raises(ConfigValidationError) as raised:
        TapRapid7(config={"api_key": "k", "lag_seconds": "soon"}, validate_config=True)
    assert any("lag_seconds" in error for error in raised.value.errors)


def test_batch_config_is_refused_naming_the_setting():
    """The SDK takes its BATCH path from the setting alone, and that path writes a window's
    STATE before the batch file holding its events is announced."""
    from singer_sdk.exceptions import ConfigValidationError

    batch = {"encoding": {"format": "jsonl"}, "storage": {"root": "file:///tmp/batches"}}
    with pytest.raises(ConfigValidationError) as raised:
        TapRapid7(config={"api_key": "k", "batch_config": batch}, validate_config=True)
    assert [error for error in raised.value.errors if error.startswith("batch_config:")]


def test_capabilities_are_only_what_the_tap_keeps():
    names = {str(capability) for capability in TapRapid7.capabilities}
    assert "batch" not in names
    assert "activate-version" not in names
    assert {"state", "catalog", "discover", "about", "stream-maps"} <= names
