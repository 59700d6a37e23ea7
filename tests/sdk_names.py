"""The check both plugins' ``test_sdk_hooks.py`` run on each private singer-sdk name they list."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence


def check_private_sdk_name(
    base: type, name: str, use: str, instances: Mapping[type, object], hooks: Sequence[type]
) -> None:
    """``base.name`` still exists; an override (in one of ``hooks``) has the SDK's parameters.

    ``use`` is ``attribute`` (set on instances: looked up on ``instances[base]``), ``call`` or
    ``override``.
    """
    if use == "attribute":
        assert hasattr(instances[base], name), f"singer-sdk {base.__name__} lost {name}"
        return
    sdk_method = getattr(base, name, None)
    assert callable(sdk_method), f"singer-sdk {base.__name__}.{name} is gone"
    if use == "override":
        ours = next(getattr(cls, name) for cls in hooks if name in cls.__dict__)
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(sdk_method).parameters
        ), f"singer-sdk {base.__name__}.{name} changed its parameters"
