"""The target's settings: one schema, one typed object, equal defaults, conversions in one place."""

import dataclasses
import subprocess
from decimal import Decimal

import pytest
from singer_sdk.exceptions import ConfigValidationError

from target_parquet_parts.settings import (
    CONFIG_SCHEMA,
    SDK_SETTINGS,
    SettingError,
    TargetSettings,
    config_from_env,
)
from target_parquet_parts.target import TargetParquetParts
from tests.target.conftest import TARGET_BIN


def test_the_typed_settings_and_the_schema_declare_the_same_settings_and_defaults(tmp_path):
    properties = CONFIG_SCHEMA["properties"]
    fields = {field.name: field for field in dataclasses.fields(TargetSettings)}
    assert set(fields) == set(properties) | set(SDK_SETTINGS)
    # the SDK appends its built-ins (SDK_SETTINGS among them) to the target's schema
    declared = TargetParquetParts(config={"output_dir": str(tmp_path)}).config_jsonschema
    declared_properties = declared["properties"]
    for name, prop in {**properties, **{n: declared_properties[n] for n in SDK_SETTINGS}}.items():
        if "default" in prop:
            assert fields[name].default == prop["default"], name
        else:
            assert fields[name].default in {None, dataclasses.MISSING}, name
    assert all(declared_properties[name] == prop for name, prop in properties.items())
    assert CONFIG_SCHEMA["properties"] == properties  # the SDK appended to a copy
    assert "batch_size_rows" not in properties


def test_from_config_converts_the_sdk_s_decimals_and_enums_once():
    from singer_sdk.helpers.capabilities import TargetLoadMethods

    settings = TargetSettings.from_config(
        {
            "output_dir": "/d",
            "state_max_lag_seconds": Decimal("0.5"),
            "max_batch_bytes": Decimal(1000),
            "load_method": TargetLoadMethods.APPEND_ONLY,
            "iceberg_catalog": {"type": "rest"},
            "unknown_extra": 1,
        }
    )
    assert settings.state_max_lag_seconds == 0.5
    assert isinstance(settings.state_max_lag_seconds, float)
    assert settings.max_batch_bytes == 1000
    assert isinstance(settings.max_batch_bytes, int)
    assert settings.load_method == "append-only"
    assert settings.iceberg_catalog == {"type": "rest"}
    assert "rest" not in repr(settings)  # catalog properties may hold credentials
    assert TargetSettings.from_config({}).output_dir == ""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"max_batch_bytes": 2.5}, "setting max_batch_bytes: expected an integer, got 2.5"),
        (
            {"state_max_lag_seconds": "soon"},
            "setting state_max_lag_seconds: expected a number, got 'soon'",
        ),
        ({"iceberg_catalog": "x"}, "setting iceberg_catalog: expected an object"),
        ({"batch_size_rows": True}, "setting batch_size_rows: expected an integer"),
    ],
)
def test_a_value_that_is_not_its_type_names_the_setting(config, message):
    with pytest.raises(SettingError, match=message):
        TargetSettings.from_config({"output_dir": "/d", **config})


def test_environment_values_are_typed_by_the_schema():
    config = config_from_env(
        {
            "TARGET_PARQUET_PARTS_STATE_MAX_LAG_SECONDS": "0.5",
            "TARGET_PARQUET_PARTS_MAX_BATCH_BYTES": "1000",
            "TARGET_PARQUET_PARTS_ICEBERG_CATALOG": '{"type": "rest"}',
            "TARGET_PARQUET_PARTS_COMPRESSION": "",
            "TARGET_PARQUET_PARTS_UNKNOWN": "1",
            "HOME": "/root",
        }
    )
    assert config == {
        "state_max_lag_seconds": 0.5,
        "max_batch_bytes": 1000,
        "iceberg_catalog": {"type": "rest"},
    }
    with pytest.raises(SettingError, match="TARGET_PARQUET_PARTS_ICEBERG_CATALOG: not a JSON"):
        config_from_env({"TARGET_PARQUET_PARTS_ICEBERG_CATALOG": "{"})


def test_numbers_given_as_text_pass_the_schema_check_as_numbers(tmp_path):
    """Meltano hands kind-less settings from the environment over as text ("0.5")."""
    target = TargetParquetParts(
        config={
            "output_dir": str(tmp_path),
            "state_max_lag_seconds": "0.5",
            "max_batch_bytes": "1000",
            "batch_size_rows": "7",
        },
        validate_config=True,
    )
    assert target.settings.state_max_lag_seconds == 0.5
    assert target.settings.max_batch_bytes == 1000
    assert target.settings.batch_size_rows == 7


def test_text_that_is_not_a_number_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigValidationError) as raised:
        TargetParquetParts(
            config={"output_dir": str(tmp_path), "state_max_lag_seconds": "soon"},
            validate_config=True,
        )
    assert any("state_max_lag_seconds" in error for error in raised.value.errors)


def test_the_cli_reads_a_number_from_the_environment_as_meltano_passes_it(tmp_path):
    """``TARGET_PARQUET_PARTS_STATE_MAX_LAG_SECONDS=0.5`` with ``--config=ENV``."""
    result = subprocess.run(
        [TARGET_BIN, "--config", "ENV"],
        input=b"",
        capture_output=True,
        env={
            "PATH": "/usr/bin:/bin",
            "TARGET_PARQUET_PARTS_OUTPUT_DIR": str(tmp_path / "out"),
            "TARGET_PARQUET_PARTS_STATE_MAX_LAG_SECONDS": "0.5",
        },
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"Config validation failed" not in result.stderr


def test_iceberg_sets_its_batch_size_default_in_the_config_and_the_settings(tmp_path):
    pytest.importorskip("pyiceberg")
    target = TargetParquetParts(
        config={"output_dir": str(tmp_path), "table_format": "iceberg"}, validate_config=True
    )
    assert target.iceberg is not None
    rows = target.iceberg.default_batch_size_rows
    assert target.config["batch_size_rows"] == rows  # what the SDK's sinks read
    assert target.settings.batch_size_rows == rows


def test_a_load_method_other_than_append_only_is_one_config_error(tmp_path):
    with pytest.raises(ConfigValidationError) as raised:
        TargetParquetParts(config={"output_dir": str(tmp_path), "load_method": "upsert"})
    (error,) = raised.value.errors
    assert error.startswith("load_method: 'upsert' is not supported")
