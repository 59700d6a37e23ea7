"""The small LEQL subset the emulator understands.

Supported: empty statement or `where()` (every entry); `where(text)` / `where("text")`
(substring of the raw message, case-sensitive); `where(/regex/i)`; `where(key=value)` (the
message parsed as JSON has `key`, dotted for nesting, equal to `value`); optionally followed by
`calculate(count)`, which turns the query into a statistical one. Anything else is rejected
with 400, as the real service rejects invalid LEQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

INVALID_STATEMENT_CODE = 100031

_KEY_VALUE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*(.+?)\s*$")
_REGEX = re.compile(r"^/(.*)/([i]?)$", re.S)


class StatementError(ValueError):
    """An unparsable or unsupported statement (answered with 400)."""


@dataclass(frozen=True)
class Statement:
    text: str
    matches: Callable[[str], bool] | None  # None: every entry matches
    is_count: bool


def parse_statement(text: str | None) -> Statement:
    """Parse `text` or raise StatementError with a message fit for the 400 body."""
    raw = (text or "").strip()
    rest = raw
    matches: Callable[[str], bool] | None = None
    if rest.lower().startswith("where("):
        inner, rest = _split_call(rest[len("where(") :], raw)
        matches = _where(inner.strip(), raw)
    rest = rest.strip()
    is_count = False
    if rest:
        if re.fullmatch(r"calculate\(\s*count\s*\)", rest, re.I):
            is_count = True
        else:
            raise StatementError(f"Invalid or unsupported LEQL near {rest[:60]!r} in {raw[:200]!r}")
    return Statement(text=raw, matches=matches, is_count=is_count)


def _split_call(after_paren: str, raw: str) -> tuple[str, str]:
    """Split `inner) rest` at the closing parenthesis, ignoring ones inside quotes/regex."""
    depth, quote = 0, ""
    for i, ch in enumerate(after_paren):
        if quote:
            if ch == quote and after_paren[i - 1] != "\\":
                quote = ""
        elif ch in "\"'/":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                return after_paren[:i], after_paren[i + 1 :]
            depth -= 1
    raise StatementError(f"Unbalanced parentheses in LEQL statement {raw[:200]!r}")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _where(inner: str, raw: str) -> Callable[[str], bool] | None:
    if not inner:
        return None
    regex = _REGEX.match(inner)
    if regex:
        try:
            pattern = re.compile(regex.group(1), re.I if regex.group(2) else 0)
        except re.error as exc:
            raise StatementError(f"Invalid regular expression in {raw[:200]!r}: {exc}") from exc
        return lambda message: pattern.search(message) is not None
    key_value = _KEY_VALUE.match(inner)
    if key_value and not (inner.startswith('"') or inner.startswith("'")):
        path = key_value.group(1).split(".")
        expected = _unquote(key_value.group(2))
        return lambda message: _json_value(message, path) == expected
    if inner[0] in "\"'" and (len(inner) < 2 or inner[-1] != inner[0]):
        raise StatementError(f"Unterminated string in LEQL statement {raw[:200]!r}")
    if any(ch in inner for ch in "()=") and inner[0] not in "\"'":
        raise StatementError(f"Unsupported where() expression in {raw[:200]!r}")
    needle = _unquote(inner)
    return lambda message: needle in message


def _json_value(message: str, path: list[str]) -> str | None:
    if not message.startswith("{"):
        return None
    try:
        value: object = json.loads(message)
    except ValueError:
        return None
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return value if isinstance(value, str) else json.dumps(value)
