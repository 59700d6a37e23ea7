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

import contextlib
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

from singer_sdk.typing import DEFAULT_JSONSCHEMA_VALIDATOR

__all__ = [
    "SettingError",
    "SettingTypes",
    "hide_secrets_in_errors",
    "secret_paths",
    "secret_texts",
]

# What marks a setting whose value must never be shown: the SDK's ``secret=True`` (which also
# emits ``writeOnly``) and Meltano's ``sensitive``.
_SECRET_MARKS = ("secret", "writeOnly", "sensitive")
# Validators whose messages name properties only, never a value.
_NAMES_ONLY = frozenset({"required", "additionalProperties", "dependentRequired", "propertyNames"})
# Keys of an object setting whose values are credentials (pyiceberg: s3.secret-access-key,
# token, credential, adls.account-key, ...).
_CREDENTIAL_KEY = re.compile(
    r"secret|password|passwd|token|credential|key|auth|sas|signature", re.I
)
_SHORTEST_REDACTED = 4  # shorter texts ("1", "ab") would blank unrelated parts of a message

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
        self.secrets = frozenset(path[0] for path in secret_paths(schema))
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
            if kind == "boolean":
                return _boolean(raw)
        except (TypeError, ValueError) as exc:
            where = source or f"setting {name}"
            # a secret, or a free-form object (a catalog's credentials), is named, never shown
            shown = _type_name(raw) if name in self.secrets or kind == "object" else repr(raw)
            wanted = "boolean (true or false)" if kind == "boolean" else kind
            msg = f"{where}: expected {_ARTICLES.get(kind, 'a')} {wanted}, got {shown}"
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
        """Number, integer and boolean settings given as text (``"0.5"``, ``"true"``), typed;
        others untouched.

        Meltano passes a setting without a ``kind`` as text when it comes from an environment
        variable or ``meltano config set``; fractional settings cannot have a ``kind`` (Meltano
        4.4.1 cannot serialize its own Decimal), so a plugin reads such text as the number it
        spells. Text that is no number is left for the schema check to refuse, naming it.
        """
        converted: dict[str, Any] = {}
        for name, raw in config.items():
            if name not in self.fields or not isinstance(raw, str):
                continue
            if self.kind(name) in {"number", "integer", "boolean"}:
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


_TRUE_TEXTS = frozenset(("true", "1", "yes", "on"))
_FALSE_TEXTS = frozenset(("false", "0", "no", "off"))


def _boolean(raw: Any) -> bool:
    """A boolean from JSON (``true``) or text (``"true"``, ``"0"``, ``"yes"``, as environments
    and ``meltano config set`` give it)."""
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in _TRUE_TEXTS:
        return True
    if text in _FALSE_TEXTS:
        return False
    raise ValueError(raw)


def _type_name(value: Any) -> str:
    """``a str``, ``an int``, ...: what a value is, without showing it."""
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name} (value hidden)"


def secret_paths(
    schema: Mapping[str, Any], extra: Iterable[str] = ()
) -> frozenset[tuple[str, ...]]:
    """Where ``schema`` marks a setting secret, at any depth, as key paths; plus ``extra`` names.

    ``extra`` is for settings the schema cannot mark but that hold credentials (a free-form
    catalog object).
    """
    found = {(name,) for name in extra}

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for name, sub in (node.get("properties") or {}).items():
            if not isinstance(sub, Mapping):
                continue
            path = (*prefix, name)
            if any(sub.get(mark) is True for mark in _SECRET_MARKS):
                found.add(path)
            walk(sub, path)
            for branch in [*sub.get("anyOf", ()), *sub.get("oneOf", ())]:
                if isinstance(branch, Mapping):
                    walk(branch, path)

    walk(schema, ())
    return frozenset(found)


def _config_path(path: Iterable[Any]) -> str:
    """``config['a']['b']``, as the SDK names a setting in its messages."""
    return "config[" + "][".join(repr(key) for key in path) + "]"


def _sdk_message(error: Any) -> str:
    """The SDK's text for ``error`` (``plugin_base._format_validation_error``), to recognise it."""
    if error.path:
        return f"{error.message} in {_config_path(error.path)}"
    return error.message


def _hidden_message(error: Any) -> str:
    """What ``error`` says about a secret: the setting's name and the rule, not the value."""
    where = _config_path(error.path) if error.path else "config"
    if error.validator in _NAMES_ONLY:
        return f"{where}: {error.message}"
    if error.validator == "type":
        kinds = error.validator_value
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        wanted = " or ".join(f"{_ARTICLES.get(k, 'a') if k != 'null' else ''} {k}" for k in kinds)
        rule = f"must be {' '.join(wanted.split())}"
    elif error.validator == "enum":
        rule = "must be one of " + ", ".join(repr(value) for value in error.validator_value)
    else:
        rule = f"does not satisfy the schema's {error.validator!r} rule"
    return f"{where}: {rule} (value hidden)"


def _touches(path: tuple[Any, ...], secrets: frozenset[tuple[str, ...]]) -> bool:
    """True when the value at ``path`` is, holds or is held by a secret setting."""
    return any(path[: len(s)] == s or s[: len(path)] == path for s in secrets if path)


def secret_texts(config: Mapping[str, Any], secrets: frozenset[tuple[str, ...]]) -> list[str]:
    """Every way a secret's value could be spelled in a message, longest first.

    A secret that is an object (a catalog's properties) is mostly not secret: its ``type``,
    ``uri`` and ``warehouse`` make messages useful. So in an object only the entries whose
    key names a credential are hidden whole, and elsewhere the password of a URL.
    """
    texts: set[str] = set()

    def add(value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, str):
            texts.update((value, repr(value)))
        elif isinstance(value, int | float | Decimal):
            texts.update((str(value), repr(value)))
        elif isinstance(value, Mapping):
            for item in value.values():
                add(item)
        elif isinstance(value, Iterable):
            for item in value:
                add(item)

    def add_in_object(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                (add if _CREDENTIAL_KEY.search(str(key)) else add_in_object)(item)
        elif isinstance(value, list | tuple):
            for item in value:
                add_in_object(item)
        elif isinstance(value, str) and "://" in value:
            with contextlib.suppress(ValueError):
                password = urlsplit(value).password
                if password:
                    texts.update((password, quote(password, safe="")))

    for path in secrets:
        value: Any = config
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        (add_in_object if isinstance(value, Mapping) else add)(value)
    return sorted((t for t in texts if len(t) >= _SHORTEST_REDACTED), key=len, reverse=True)


def redacted(message: str, texts: Iterable[str]) -> str:
    """``message`` with each of ``texts`` (longest first) shown as ``[REDACTED]``."""
    for text in texts:
        message = message.replace(text, "[REDACTED]")
    return message


def hide_secrets_in_errors(
    errors: Iterable[str],
    schema: Mapping[str, Any],
    config: Mapping[str, Any],
    extra_secrets: Iterable[str] = (),
) -> list[str]:
    """The SDK's config validation messages with every secret setting named, never shown.

    The SDK's messages quote the offending value (``98765 is not of type 'string' in
    config['api_key']``), and its CLI logs each one. The same schema is checked again here to
    know which message is about a secret; such a message becomes ``config['api_key']: must be
    a string (value hidden)``. Any other message still spelling a secret's value (one about
    the whole config) gets ``[REDACTED]`` in its place.
    """
    secrets = secret_paths(schema, extra_secrets)
    errors = list(errors)
    if not secrets or not errors:
        return errors
    hidden: dict[str, str] = {}
    for error in DEFAULT_JSONSCHEMA_VALIDATOR(schema).iter_errors(config):
        if _touches(tuple(error.path), secrets):
            hidden[_sdk_message(error)] = _hidden_message(error)
    texts = secret_texts(config, secrets)
    named = [f" in {_config_path(path)}" for path in secrets]
    shown: list[str] = []
    for message in errors:
        if message in hidden:
            shown.append(hidden[message])
            continue
        where = next((n for n in named if n in message), None)
        if where is not None:  # about a secret, in words not recognised: name it only
            shown.append(f"{where.removeprefix(' in ')}: not valid (value hidden)")
            continue
        shown.append(redacted(message, texts))
    return shown
