"""The private singer-sdk names the target relies on still exist in the installed SDK.

An SDK upgrade that renames or removes one would otherwise pass silently: an override of a
missing hook is never called (the target would emit STATE only at a full drain, lose its fast
path, or drain inside the signal handler again).
"""

import inspect

import pytest
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.plugin_base import SingerCommand
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target

from target_parquet_parts import sdk_hooks
from target_parquet_parts.reader import LineNumberingReader
from target_parquet_parts.sinks import ParquetPartsSink
from target_parquet_parts.target import TargetParquetParts
from tests.sdk_names import check_private_sdk_name

HOOK_CLASSES = (sdk_hooks.TargetHooks, sdk_hooks.SinkHooks, sdk_hooks.ReaderHooks)
SCHEMA = {
    "type": "SCHEMA",
    "stream": "events",
    "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
    "key_properties": [],
}


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> dict[type, object]:
    out = tmp_path_factory.mktemp("hooks")
    target = TargetParquetParts(config={"output_dir": str(out)}, validate_config=True)
    target.handle_schema_message(SCHEMA)
    return {
        Target: target,
        BatchSink: target.sinks_active["events"],
        MsgSpecReader: target.message_reader,
    }


@pytest.mark.parametrize(
    ("base", "name", "use"), sdk_hooks.PRIVATE_SDK_NAMES, ids=lambda v: getattr(v, "__name__", v)
)
def test_each_private_sdk_name_still_exists(base, name, use, instances):
    check_private_sdk_name(base, name, use, instances, HOOK_CLASSES)


def test_every_private_override_in_the_hook_classes_is_listed():
    listed = {(base, name) for base, name, use in sdk_hooks.PRIVATE_SDK_NAMES if use == "override"}
    overridden = {
        (cls.__mro__[1], name)
        for cls in HOOK_CLASSES
        for name in cls.__dict__
        if name.startswith("_") and not name.startswith("__") and name != "_abc_impl"
    }
    assert overridden == listed


def test_no_other_target_module_overrides_a_private_sdk_name():
    """Private overrides live in sdk_hooks only: the plugin classes add public names."""
    for cls, base in (
        (TargetParquetParts, Target),
        (ParquetPartsSink, BatchSink),
        (LineNumberingReader, MsgSpecReader),
    ):
        own = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__")} - {"_abc_impl"}
        sdk = {n for n in own if any(n in vars(b) for b in base.__mro__)}
        assert sdk == set(), f"{cls.__name__} overrides private SDK names {sdk}"


def test_the_public_names_the_hooks_add_are_not_sdk_names():
    """A public delegate that shadowed an SDK method would change what the SDK calls."""
    for cls in HOOK_CLASSES:
        base = cls.__mro__[1]
        public = {n for n in vars(cls) if not n.startswith("_")}
        assert {n for n in public if hasattr(base, n)} == set(), cls.__name__


def test_the_overrides_are_the_ones_the_sdk_calls(instances):
    """The SDK resolves the hooks to ours (not shadowed by a later base class)."""
    target_cls = type(instances[Target])
    assert target_cls._process_state_message is sdk_hooks.TargetHooks._process_state_message
    assert target_cls._handle_termination is sdk_hooks.TargetHooks._handle_termination
    sink_cls = type(instances[BatchSink])
    assert sink_cls._after_process_record is sdk_hooks.SinkHooks._after_process_record
    reader_cls = type(instances[MsgSpecReader])
    assert reader_cls._process_unknown_message is sdk_hooks.ReaderHooks._process_unknown_message


def test_the_cli_uses_the_one_line_excepthook():
    """The SDK's command installs ``self.excepthook`` as ``sys.excepthook``; ours is that one."""
    command = TargetParquetParts.cli
    assert isinstance(command, SingerCommand)
    assert command.excepthook == TargetParquetParts.log_unhandled
    assert "sys.excepthook = self.excepthook" in inspect.getsource(SingerCommand.invoke)
