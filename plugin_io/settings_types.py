"""Typed setting values from a Singer plugin's JSON Schema: one conversion for every plugin here.

Each plugin declares its settings once, as the JSON Schema the SDK validates (and ``--about``
prints), and reads them once into a frozen dataclass. The values arrive in several forms: the
SDK parses JSON numbers as ``Decimal``, Meltano passes kind-less settings (the fractional ones)
as text, environment variables are text, and the SDK's enums stand for strings. ``SettingTypes``
turns each into the type the schema gives it, and every error names the setting or variable.
In ``plugin_io``, not in the tap, so that the target, which must work for any tap, does not
import the tap, and neither plugin restates the other's conversion.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SettingError", "SettingTypes"]

_ARTICLES = {"integer": "an", "array": "an", "object": "an"}


class SettingError(ValueError):
    """A setting whose value cannot mean what its type says; the message names the setting."""


class SettingTypes:
    """The JSON Schema type of each setting a plugin reads, and conversions by it.

    ``fields`` are the settings the plugin's dataclass holds; ``extra_kinds`` types the SDK
    built-ins it reads too (the SDK appends them to the schema only at run time).
    ``single_entry`` names array settings whose environment value, when not a JSON array, is
    one entry (a regex may hold commas) instead of a comma-separated list.
    """

    def __init__(
        self,
        schema: Mapping[str, Any],
        fields: Iterable[str],
        *,
        env_prefix: str,
        extra_kinds: Mapping[str, str] | None = None,
        single_entry: Iterable[str] = (),
    ) -> None:
        properties = schema["properties"]
        self.fields = frozenset(fields)
        self.env_prefix = env_prefix
        self.single_entry = frozenset(single_entry)
        self._kinds = dict(extra_kinds or {})
        for name in self.fields - set(self._kinds):
            types = properties[name].get("type", "string")
            types = [types] if isinstance(types, str) else list(types)
            self._kinds[name] = next((kind for kind in types if kind != "null"), "string")

    def kind(self, name: str) -> str:
        """The setting's JSON Schema type (``integer``, ``number``, ``array``, ...)."""
        return self._kinds[name]

    def convert(self, name: str, raw: Any, *, source: str | None = None) -> Any:
        """One value to its schema type; an error names ``source`` (else the setting)."""
        kind = self.kind(name)
        try:
            if kind == "integer":
                if isinstance(raw, str):
                    return int(raw.strip())
                if isinstance(raw, bool) or int(raw) != raw:
                    raise ValueError(raw)
                return int(raw)
            if kind == "number":
                if isinstance(raw, bool):
                    raise ValueError(raw)
                return float(raw)
            if kind == "array":
                if isinstance(raw, str | bytes) or not hasattr(raw, "__iter__"):
                    raise TypeError(raw)
                return tuple(str(item) for item in raw)
            if kind == "object":
                if not isinstance(raw, Mapping):
                    raise TypeError(raw)
                return dict(raw)
        except (TypeError, ValueError) as exc:
            where = source or f"setting {name}"
            msg = f"{where}: expected {_ARTICLES.get(kind, 'a')} {kind}, got {raw!r}"
            raise SettingError(msg) from exc
        return str(getattr(raw, "value", raw))  # an SDK enum (load_method) as its value

    def values(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The dataclass's keyword arguments: every set field, typed (unknown keys ignored)."""
        return {
            name: self.convert(name, config[name])
            for name in self.fields
            if config.get(name) is not None
        }

    def numbers_from_text(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Number and integer settings given as text (``"0.5"``), as numbers; others untouched.

        Meltano passes a setting without a ``kind`` as text when it comes from an environment
        variable or ``meltano config set``; fractional settings cannot have a ``kind`` (Meltano
        4.4.1 cannot serialize its own Decimal), so a plugin reads such text as the number it
        spells. Text that is no number is left for the schema check to refuse, naming it.
        """
        converted: dict[str, Any] = {}
        for name, raw in config.items():
            if name not in self.fields or not isinstance(raw, str):
                continue
            if self.kind(name) in {"number", "integer"}:
                try:
                    converted[name] = self.convert(name, raw)
                except SettingError:
                    continue
        return converted

    def from_env(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The settings in ``<env_prefix><NAME>`` variables, typed (as Meltano exports them).

        Arrays and objects are JSON (as Meltano passes them); an array that is not JSON is
        comma-separated, or one entry for ``single_entry`` settings.
        """
        config: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith(self.env_prefix) or raw == "":
                continue
            name = key.removeprefix(self.env_prefix).lower()
            if name not in self.fields:
                continue
            value: Any = raw
            text = raw.strip()
            kind = self.kind(name)
            if kind == "object" or (kind == "array" and text.startswith("[")):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    msg = f"{key}: not a JSON {kind}: {exc}"
                    raise SettingError(msg) from exc
            elif kind == "array":
                single = name in self.single_entry
                value = [text] if single else [i.strip() for i in text.split(",") if i.strip()]
            config[name] = self.convert(name, value, source=key)
        return config
