"""The msgspec Singer reader, counting input lines so every error can name its line."""

from __future__ import annotations

import sys
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecReader, decoder
from singer_sdk.singerlib.exceptions import InvalidInputLine

__all__ = ["LineNumberingReader"]


def _excerpt(line: str | bytes, limit: int = 200) -> str:
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LineNumberingReader(MsgSpecReader):
    """``MsgSpecReader`` (msgspec decoding, floats as Decimal) plus a line counter.

    Reads standard input as bytes (msgspec decodes UTF-8 bytes directly; no text layer). Bad
    lines raise an error naming the line number and a short excerpt, instead of logging the
    whole (possibly huge) line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0

    @property
    def default_input(self) -> t.IO[t.Any]:  # type: ignore[override]
        """Standard input, binary."""
        return sys.stdin.buffer

    def deserialize_json(self, line: t.Any) -> dict:
        """Decode one line; count it."""
        self.line_number += 1
        try:
            message = decoder.decode(line)
        except msgspec.DecodeError as exc:
            msg = f"input line {self.line_number} is not valid JSON ({exc}): {_excerpt(line)}"
            raise InvalidInputLine(msg) from None
        if not isinstance(message, dict):
            msg = f"input line {self.line_number} is not a JSON object: {_excerpt(line)}"
            raise InvalidInputLine(msg)
        return message

    def _process_unknown_message(self, message_dict: dict) -> None:
        msg = (
            f"input line {self.line_number}: unknown Singer message type "
            f"{message_dict.get('type')!r} (expected SCHEMA, RECORD, STATE, ACTIVATE_VERSION "
            "or BATCH)"
        )
        raise ValueError(msg)
