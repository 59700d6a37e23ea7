"""`kvp_info`: the key/value pairs Rapid7 parsed from an entry, with their spans in the message.

Rapid7's spec: with `kvp_info=true` every event gains `kvp_info: [{"key": {"text", "start",
"end"}, "value": {"text", "start", "end"}}]`, "information about the KVPs in the log entry that
were parsed when they were received"; `start` is the position of the first character (the first
character of the entry is 0), `end` the position after the last. Its one real example is the
JSON message `{"931dde6c60":899}` giving key `json.931dde6c60` at 2..12 (inside the quotes) and
value `899` at 14..17. What the emulator derives, from the message alone:

- a message that parses as a JSON object: one pair per scalar member, keys `json.<key>`, nested
  objects dotted (`json.a.b`), arrays skipped; string values are spanned inside their quotes;
- any other message (text, or JSON that does not parse): every `key=value` (value up to the
  next blank, `,` or `;`, or a double-quoted string, spanned inside its quotes).

Spans count characters (code points) of the message; `text` is always `message[start:end]`.
Rapid7 does not say which unit it counts (its service is Java, whose strings count UTF-16 units:
they differ from ours only for characters outside the BMP, such as emoji).
The spec's second example nests `value` inside `key`: option `kvp_shape="nested_value"`.
"""

from __future__ import annotations

import json.decoder
import re
from collections.abc import Callable
from json.encoder import encode_basestring as _encode

# The C string scanner behind json.loads: (decoded text, index after the closing quote).
scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

Pair = tuple[str, int, int, str, int, int]  # key text, start, end; value text, start, end

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_TEXT_PAIR = re.compile(r'(?<![\w.-])([A-Za-z_][\w.-]*)=(?:"([^"\n]*)"|([^\s,;"]+))')
_LITERALS = ("true", "false", "null")
MAX_DEPTH = 32  # deeper nesting is not parsed as JSON (no recursion without bound)


class _NotJsonError(ValueError):
    """The message is not a JSON object the scanner can walk."""


def pairs(message: str) -> list[Pair]:
    """The message's key/value pairs (see the module docstring), in message order."""
    if message.startswith("{"):
        try:
            out: list[Pair] = []
            end = _object(message, 0, "json", out, 0)
            if _WHITESPACE.match(message, end).end() == len(message):  # type: ignore[union-attr]
                return out
        except (_NotJsonError, ValueError, IndexError):
            pass
    return [_text_pair(match) for match in _TEXT_PAIR.finditer(message)]


def _text_pair(match: re.Match[str]) -> Pair:
    group = 2 if match.group(2) is not None else 3
    return (
        match.group(1),
        match.start(1),
        match.end(1),
        match.group(group),
        match.start(group),
        match.end(group),
    )


def _skip(message: str, i: int) -> int:
    return _WHITESPACE.match(message, i).end()  # type: ignore[union-attr]


def _object(message: str, i: int, prefix: str, out: list[Pair], depth: int) -> int:
    """Walk the object starting at `message[i] == "{"`; return the index after its `}`."""
    if depth > MAX_DEPTH:
        raise _NotJsonError("too deep")
    i = _skip(message, i + 1)
    if message[i] == "}":
        return i + 1
    while True:
        if message[i] != '"':
            raise _NotJsonError("key expected")
        key, after_key = scanstring(message, i + 1)
        key_start, key_end = i + 1, after_key - 1
        i = _skip(message, after_key)
        if message[i] != ":":
            raise _NotJsonError("colon expected")
        i = _skip(message, i + 1)
        name = f"{prefix}.{key}"
        char = message[i]
        if char == "{":
            i = _object(message, i, name, out, depth + 1)
        elif char == "[":
            i = _array(message, i, depth + 1)
        else:
            value_start, value_end, i = _scalar(message, i)
            out.append(
                (
                    name,
                    key_start,
                    key_end,
                    message[value_start:value_end],
                    value_start,
                    value_end,
                )
            )
        i = _skip(message, i)
        if message[i] == "}":
            return i + 1
        if message[i] != ",":
            raise _NotJsonError("comma expected")
        i = _skip(message, i + 1)


def _array(message: str, i: int, depth: int) -> int:
    """Skip the array starting at `message[i] == "["`; return the index after its `]`."""
    if depth > MAX_DEPTH:
        raise _NotJsonError("too deep")
    i = _skip(message, i + 1)
    if message[i] == "]":
        return i + 1
    while True:
        char = message[i]
        if char == "{":
            i = _object(message, i, "", [], depth + 1)
        elif char == "[":
            i = _array(message, i, depth + 1)
        else:
            i = _scalar(message, i)[2]
        i = _skip(message, i)
        if message[i] == "]":
            return i + 1
        if message[i] != ",":
            raise _NotJsonError("comma expected")
        i = _skip(message, i + 1)


def _scalar(message: str, i: int) -> tuple[int, int, int]:
    """(value start, value end, index after it): strings are spanned inside their quotes."""
    if message[i] == '"':
        end = scanstring(message, i + 1)[1]
        return i + 1, end - 1, end
    for literal in _LITERALS:
        if message.startswith(literal, i):
            return i, i + len(literal), i + len(literal)
    number = _NUMBER.match(message, i)
    if number is None or number.end() == i:
        raise _NotJsonError("value expected")
    return i, number.end(), number.end()


def render(message: str, shape: str) -> bytes:
    """`kvp_info`'s JSON array for one message, in the given `kvp_shape`.

    Built with f-strings and the C string encoder rather than `json.dumps` of dicts: it runs
    per served event when a client asks for `kvp_info`, and halves that cost."""
    items = []
    nested = shape == "nested_value"
    for key, key_start, key_end, value, value_start, value_end in pairs(message):
        value_json = f'{{"text":{_encode(value)},"start":{value_start},"end":{value_end}}}'
        key_json = f'"text":{_encode(key)},"start":{key_start},"end":{key_end}'
        if nested:
            items.append(f'{{"key":{{{key_json},"value":{value_json}}}}}')
        else:
            items.append(f'{{"key":{{{key_json}}},"value":{value_json}}}')
    return f"[{','.join(items)}]".encode()
