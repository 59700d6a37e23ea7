"""The private singer-sdk names the tap relies on still exist in the installed SDK.

An SDK upgrade that renames or removes one would otherwise pass silently: an override of a
missing hook is never called (the tap would lose its per-log cursors or its date checks).
"""

import inspect

import pytest
from singer_sdk import Stream, Tap
from singer_sdk.plugin_base import SingerCommand

from tap_rapid7 import sdk_hooks
from tap_rapid7.streams import EventsStream
from tap_rapid7.tap import TapRapid7
from tests.sdk_names import check_private_sdk_name

HOOK_CLASSES = (sdk_hooks.TapHooks, sdk_hooks.StreamHooks)

CONFIG = {"api_key": "k", "base_url": "http://127.0.0.1:9", "start_date": "2024-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def instances() -> dict[type, object]:
    tap = TapRapid7(config=CONFIG, validate_config=True)
    return {Tap: tap, Stream: tap.streams["events"]}


@pytest.mark.parametrize(
    ("base", "name", "use"), sdk_hooks.PRIVATE_SDK_NAMES, ids=lambda v: getattr(v, "__name__", v)
)
def test_each_private_sdk_name_still_exists(base, name, use, instances):
    check_private_sdk_name(base, name, use, instances, HOOK_CLASSES)


def test_every_private_override_in_the_hook_classes_is_listed():
    listed = {name for _, name, use in sdk_hooks.PRIVATE_SDK_NAMES if use == "override"}
    overridden = {
        name
        for cls in HOOK_CLASSES
        for name in cls.__dict__
        if name.startswith("_") and not name.startswith("__") and name != "_abc_impl"
    }
    assert overridden == listed


def test_no_other_tap_module_overrides_a_private_sdk_name():
    """Private overrides live in sdk_hooks only: the plugin classes add public names."""
    for cls in (TapRapid7, EventsStream):
        own = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__")} - {"_abc_impl"}
        sdk = {n for n in own if any(n in vars(base) for base in (Tap, Stream))}
        assert sdk == set(), f"{cls.__name__} overrides private SDK names {sdk}"


def test_the_overrides_are_the_ones_the_sdk_calls(instances):
    """The SDK resolves the hooks to ours (not shadowed by a later base class)."""
    assert type(instances[Tap])._validate_config is sdk_hooks.TapHooks._validate_config
    stream_cls = type(instances[Stream])
    assert stream_cls._increment_stream_state is sdk_hooks.StreamHooks._increment_stream_state


def test_the_sync_failure_line_moved_to_debug_is_still_the_sdks():
    """``StreamHooks.log`` moves this exact SDK line to DEBUG; a reworded one would stay ERROR."""
    assert f'"{sdk_hooks.SYNC_FAILED}"' in inspect.getsource(Stream.sync)


def test_the_cli_uses_the_one_line_excepthook():
    """The SDK's command installs ``self.excepthook`` as ``sys.excepthook``; ours is that one."""
    command = TapRapid7.cli
    assert isinstance(command, SingerCommand)
    assert command.excepthook == TapRapid7.log_unhandled
    assert "sys.excepthook = self.excepthook" in inspect.getsource(SingerCommand.invoke)
