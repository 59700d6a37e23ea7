"""RECORD lines kept as read, turned into an Arrow table by one C++ pass per batch.

Why: decoding each RECORD line into a Python dict, then pulling every column back out of the
dicts (``columns.py``), is most of the target's time, and it holds the GIL. A RECORD line of a
stream on the target's fast path (no stream map, no flattening, no record metadata, no
per-record validator) is instead kept as the bytes read; at flush, pyarrow's JSON reader parses
the batch's lines against the stream's Arrow schema in C++, without the GIL (on the part writer
with ``overlap_writes``, while the reader goes on with the next batch: ``sinks.py``).

The result must be the table ``columns.build_table`` would build from the same records, or
nothing: ``LineConverter.convert`` returns None whenever it cannot prove that, and the caller
decodes the lines and takes the exact path, which names the line and field at fault. pyarrow's
parse with an explicit schema and ``unexpected_field_behavior="error"`` refuses what the exact
path refuses for types (a number in a string field, ``1.5`` or ``true`` in an integer field,
int64 overflow, ``1e400``, an object where a list goes), duplicate keys, fields the schema
lacks and lone surrogates; invalid UTF-8 it copies as it is, and a full validation of the
parsed table refuses it. What it would accept differently is checked here and sent to the exact
path: a null (or a missing field, which reads as null) where the schema requires the field or
forbids null, or in a key property; a date or date-time that Arrow's cast refuses or that lies
outside the years 1 to 9999; ``NaN`` or ``Infinity`` (Arrow's parser takes them); a negative
zero in a number field (``-0``, which msgspec reads as the integer 0); a line holding more than
one JSON value. A stream whose batches keep being refused stops trying (``REFUSALS_TO_GIVE_UP``).
Streams with JSON-text columns or ``format: time`` fields, whose conversion is Python's, always
take the exact path.

Only lines that begin exactly as a Singer encoder writes a RECORD (``{"type":"RECORD",
"stream":"<name>","record":{``, compact or with Python's default separators) are kept undecoded;
any other spelling is decoded on arrival as before. A kept line that turns out not to be JSON
fails at its batch's flush, naming its line, before any STATE after it can be emitted.
"""

from __future__ import annotations

import typing as t

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from target_parquet_parts.arrow_schema import Kind
from target_parquet_parts.columns import first_outside_range

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from target_parquet_parts.arrow_schema import FieldSpec, StreamSpec

__all__ = [
    "RECORD_LINE_PREFIXES",
    "REFUSALS_TO_GIVE_UP",
    "LineConverter",
    "record_line_head",
    "record_line_stream",
    "stream_key",
]

_COMPACT = b'{"type":"RECORD","stream":"'
_SPACED = b'{"type": "RECORD", "stream": "'
_COMPACT_RECORD = b'","record":{'
_SPACED_RECORD = b'", "record": {'
RECORD_LINE_PREFIXES = (_COMPACT, _SPACED)

# The envelope a RECORD may carry besides the record (Singer spec); anything else: exact path.
_ENVELOPE_FIELDS = (
    pa.field("type", pa.string()),
    pa.field("stream", pa.string()),
    pa.field("time_extracted", pa.string()),
    pa.field("version", pa.int64()),
)
# Batches refused in a row after which a stream's lines go to the exact path untried (records
# that always carry a field the schema lacks, naive date-times...: a parse each would be waste).
REFUSALS_TO_GIVE_UP = 3
_BLOCK_BYTES = 1 << 20  # pyarrow's default; a longer line needs a block of its own size
_PARSED_AS_STRING = (Kind.TIMESTAMP, Kind.DATE)  # then cast, as columns.py casts them
_CONVERTIBLE = frozenset({Kind.INT, Kind.FLOAT, Kind.STR, Kind.BOOL, Kind.LIST, Kind.STRUCT})


def record_line_head(line: bytes) -> tuple[bytes, bytes] | None:
    """(the stream name as spelled, the line's head up to the record's ``{``) if ``line``
    begins like an encoder's RECORD, else None.

    Every line that starts with the same head names the same stream the same way (the name
    holds no quote), so one ``startswith`` recognises the next lines of that stream.
    """
    if line.startswith(_COMPACT):
        start, record = len(_COMPACT), _COMPACT_RECORD
    elif line.startswith(_SPACED):
        start, record = len(_SPACED), _SPACED_RECORD
    else:
        return None
    end = line.find(b'"', start)
    if end > 0 and line.startswith(record, end):
        return line[start:end], line[: end + len(record)]
    return None


def record_line_stream(line: bytes) -> bytes | None:
    """The stream name as spelled in ``line`` if it begins like an encoder's RECORD, else None."""
    head = record_line_head(line)
    return None if head is None else head[0]


def stream_key(stream_name: str) -> bytes | None:
    """How a RECORD line spells ``stream_name`` (what ``record_line_stream`` returns).

    None for a name an encoder may spell in more than one way (non-ASCII, quotes, backslashes,
    control characters): its lines are decoded on arrival instead.
    """
    if not stream_name.isascii() or not stream_name.isprintable():
        return None
    if '"' in stream_name or "\\" in stream_name:
        return None
    return stream_name.encode()


def _parse_type(spec: FieldSpec) -> pa.DataType:
    """What pyarrow's JSON reader is told to build for ``spec`` (dates as their strings)."""
    if spec.kind in _PARSED_AS_STRING:
        return pa.string()
    if spec.kind == Kind.LIST:
        return pa.list_(pa.field("item", _parse_type(spec.item)))
    if spec.kind == Kind.STRUCT:
        return pa.struct([pa.field(c.name, _parse_type(c)) for c in spec.children])
    return spec.arrow_type


def _convertible(spec: FieldSpec) -> bool:
    if spec.kind in _PARSED_AS_STRING:
        return True
    return spec.kind in _CONVERTIBLE and all(_convertible(c) for c in spec.children)


def _acceptable(
    array: pa.Array | pa.ChunkedArray,
    spec: FieldSpec,
    present: bool,
    among: pa.Array | pa.ChunkedArray | None = None,
) -> bool:
    """Whether the exact path would take these values as they are (after the cast).

    ``present``: the field must be present (required, or a key property). A missing field
    reads as null here, so a null in such a field, or in one that forbids null, sends the batch
    to the exact path, which tells a missing field from an explicit null. ``among``: the rows
    that count (a struct's children only where the struct itself is not null, as there).
    """
    if array.null_count and (present or not spec.nullable):
        nulls = pc.is_null(array)
        if among is not None:
            nulls = pc.and_(nulls, among)
        if pc.any(nulls).as_py():
            return False
    kind = spec.kind
    if kind in _PARSED_AS_STRING:
        return first_outside_range(array, spec.arrow_type) is None
    if kind == Kind.FLOAT:
        # NaN and Infinity: Arrow's parser takes them, JSON (and msgspec) does not. -0: msgspec
        # reads the integer 0, so the exact path stores 0.0 where Arrow keeps -0.0.
        if not len(array) or pc.all(pc.is_finite(array)).as_py() is False:
            return not len(array)
        zeros = pc.filter(array, pc.equal(array, 0.0))
        return not len(zeros) or not pc.any(pc.less(pc.divide(1.0, zeros), 0.0)).as_py()
    if kind == Kind.LIST:  # the items of the lists that are there
        return _acceptable(pc.list_flatten(array), spec.item, present=False)
    if kind == Kind.STRUCT:
        valid = pc.is_valid(array) if among is None else pc.and_(among, pc.is_valid(array))
        return all(
            _acceptable(child, child_spec, child_spec.name in spec.required, valid)
            for child, child_spec in zip(array.flatten(), spec.children, strict=True)
        )
    return True


class LineConverter:
    """One stream's RECORD lines → its Arrow table, or None (then: the exact path)."""

    def __init__(self, spec: StreamSpec, key_properties: Sequence[str]) -> None:
        self._spec = spec
        self._present = spec.required | set(key_properties)
        record = pa.struct([pa.field(f.name, _parse_type(f)) for f in spec.fields])
        self._parse_options = pa_json.ParseOptions(
            explicit_schema=pa.schema([*_ENVELOPE_FIELDS, pa.field("record", record)]),
            unexpected_field_behavior="error",
        )
        self.last_refusal = ""  # why the last batch took the exact path (DEBUG logs)
        self._refusals = 0  # batches refused in a row

    @classmethod
    def for_stream(cls, spec: StreamSpec, key_properties: Sequence[str]) -> LineConverter | None:
        """A converter when every field converts in C++ and every key is a column, else None."""
        columns = {f.name for f in spec.fields}
        if not spec.fields or not set(key_properties) <= columns:
            return None
        if not all(_convertible(f) for f in spec.fields):
            return None
        return cls(spec, key_properties)

    def convert(self, data: bytes, rows: int) -> pa.Table | None:
        """The table of ``data``: ``rows`` RECORD lines of this stream, joined as read; or None.

        The table's columns keep the parse's chunks (one per block of input), which saves a
        copy of the batch; Parquet writes them as it would one array.
        """
        if self._refusals >= REFUSALS_TO_GIVE_UP:
            return None  # this stream's batches keep being refused: not worth a parse each
        if not data.endswith(b"\n"):  # the input's last line may lack its newline
            data += b"\n"
        try:
            try:
                parsed = self._parse(data, _BLOCK_BYTES)
            except pa.ArrowInvalid as exc:
                if "straddl" not in str(exc):
                    raise
                # A line longer than a block: parse again with blocks that hold the longest.
                parsed = self._parse(data, max(map(len, data.split(b"\n"))) + 2)
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            return self._refuse(f"parse: {str(exc).splitlines()[0][:200]}")
        if parsed.num_rows != rows:
            return self._refuse("a line holds more than one JSON value")
        try:
            parsed.validate(full=True)  # the parser copies string bytes without checking UTF-8
        except pa.ArrowInvalid as exc:
            return self._refuse(f"parse: {str(exc).splitlines()[0][:200]}")
        columns: list[pa.ChunkedArray] = []
        for parsed_column, spec in zip(
            parsed.column("record").flatten(), self._spec.fields, strict=True
        ):
            column = parsed_column
            if column.type != spec.arrow_type:
                try:
                    column = pc.cast(column, spec.arrow_type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    return self._refuse(f"field '{spec.name}': a value Arrow's cast refuses")
            if not _acceptable(column, spec, spec.name in self._present):
                return self._refuse(f"field '{spec.name}': nulls, infinities or out-of-range")
            columns.append(column)
        self._refusals = 0
        return pa.Table.from_arrays(columns, schema=self._spec.arrow_schema)

    def _refuse(self, reason: str) -> pa.Table | None:
        """Note why the batch takes the exact path; None, for ``convert`` to return."""
        self._refusals += 1
        if self._refusals == REFUSALS_TO_GIVE_UP:
            reason += "; the stream's next batches are not tried"
        self.last_refusal = reason
        return None

    def _parse(self, data: bytes, block_bytes: int) -> pa.Table:
        # Threads only when there are blocks to share: with use_threads, each call starts a
        # thread (a flush per STATE of a few records would start one per flush).
        return pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(
                use_threads=len(data) > block_bytes, block_size=block_bytes
            ),
            parse_options=self._parse_options,
        )
