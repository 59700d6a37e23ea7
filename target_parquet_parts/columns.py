"""Records → Arrow table, checking the records against the schema in bulk on the way.

Why bulk: checking each record with jsonschema in Python costs most of a plain SDK target's
time. Here every column is pulled out of the records once, its Python value types are collected
with one C-level pass (``set(map(type, values))``) and compared with the types the JSON Schema
allows; then pyarrow converts the whole column at once. Only when something is wrong does the
code walk values one by one, to name the field, the record and its input line.

What is enforced (the same records the SDK's validator refuses for these keywords): JSON types
(a bool is not an integer, a ``1.5`` is not an integer, a string is not an array...), null in a
non-nullable field, missing ``required`` fields (top level and nested), int64 range, and
``date-time``/``date``/``time`` syntax (the SDK parses those per record and fails on bad ones).
JSON text columns are checked value by value against their own sub-schema.

Also refused, because a part holding them could not be read back everywhere, although the JSON
Schema allows them: numbers that are not finite in float64 (``1e400`` would be stored as
infinity; JSON has no infinity, so no schema allows one), and dates or date-times outside the
years 1 to 9999 (UTC; ``0000-01-01`` is a valid Arrow date32 but Python's ``datetime``, and so
pyarrow's ``to_pylist``/pandas, cannot hold it). A JSON text value nested too deeply to check or
encode is refused with its field path instead of a bare ``RecursionError``.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import itertools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from singer_sdk.contrib.msgspec import encoder as _json_encoder
from singer_sdk.typing import DEFAULT_JSONSCHEMA_VALIDATOR

from target_parquet_parts.arrow_schema import TIMESTAMP_TYPE, FieldSpec, Kind, StreamSpec

__all__ = ["ColumnError", "build_table", "first_outside_range"]

NoneType = type(None)
_UTC = datetime.UTC
# What every reader can hold (Python's datetime range), per Arrow type, in UTC.
_RANGES = {
    pa.date32(): (
        pa.scalar(datetime.date.min, pa.date32()),
        pa.scalar(datetime.date.max, pa.date32()),
    ),
    TIMESTAMP_TYPE: (
        pa.scalar(datetime.datetime.min.replace(tzinfo=_UTC), TIMESTAMP_TYPE),
        pa.scalar(datetime.datetime.max.replace(tzinfo=_UTC), TIMESTAMP_TYPE),
    ),
}
_JSON_TYPE_NAMES = {
    str: "string",
    int: "integer",
    bool: "boolean",
    float: "number",
    decimal.Decimal: "number",
    list: "array",
    dict: "object",
    NoneType: "null",
}


class ColumnError(ValueError):
    """A value that does not fit its field: ``row`` is its index in the values converted."""

    def __init__(self, path: str, row: int | None, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.row = row
        self.reason = reason


def _type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first(values: Sequence[Any], predicate: Callable[[Any], bool]) -> int:
    return next(i for i, v in enumerate(values) if predicate(v))


def _lacks(name: str, value: Any) -> bool:
    """A dict without the key `name` (None is not a dict: its absence is checked elsewhere)."""
    return value is not None and name not in value


def _check_types(values: list[Any], spec: FieldSpec, path: str) -> bool:
    """Refuse values of a JSON type the field does not allow; return True if nulls occur."""
    if spec.json_schema is not None:  # checked value by value against its sub-schema
        return None in values
    types = set(map(type, values))
    has_null = NoneType in types
    types.discard(NoneType)
    if not types <= spec.py_types:
        allowed = spec.py_types
        row = _first(values, lambda v: v is not None and type(v) not in allowed)
        expected = sorted({_JSON_TYPE_NAMES[t] for t in allowed})
        raise ColumnError(
            path,
            row,
            f"expected {' or '.join(expected)}, got {_type_name(values[row])} "
            f"{_short(values[row])}",
        )
    return has_null


def _check_children_presence(
    dicts: list[Any], spec: FieldSpec, path: str, has_null: dict[str, bool]
) -> None:
    """Required children must be present; non-nullable children must not be explicit nulls."""
    for child in spec.children:
        name = child.name
        # A missing key reads as null, so a column without nulls proves presence everywhere.
        if name in spec.required and has_null.get(name, True):
            present = sum(map(operator.contains, filter(None, dicts), itertools.repeat(name)))
            if present != len(dicts) - dicts.count(None):
                row = _first(dicts, functools.partial(_lacks, name))
                raise ColumnError(f"{path}{name}", row, f"required field '{name}' is missing")
        if has_null.get(name) and not child.nullable:
            bad = [
                i for i, d in enumerate(dicts) if d is not None and name in d and d[name] is None
            ]
            if bad:
                raise ColumnError(f"{path}{name}", bad[0], "null is not allowed")


def _struct_children(dicts: list[Any], spec: FieldSpec, path: str) -> list[pa.Array]:
    arrays = []
    has_null: dict[str, bool] = {}
    for child in spec.children:
        values = [None if d is None else d.get(child.name) for d in dicts]
        has_null[child.name] = _check_types(values, child, f"{path}{child.name}")
        arrays.append(_convert_checked(values, child, f"{path}{child.name}"))
    _check_children_presence(dicts, spec, path, has_null)
    return arrays


def _parse_datetimes(values: list[Any], spec: FieldSpec, path: str) -> pa.Array:
    """Slow path for strings Arrow's ISO parser refuses (no offset, >6 fraction digits...)."""
    out: list[Any] = []
    for row, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        try:
            if spec.kind == Kind.DATE:
                out.append(datetime.date.fromisoformat(value))
                continue
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            kind = "date" if spec.kind == Kind.DATE else "date-time"
            raise ColumnError(path, row, f"not a valid {kind}: {_short(value)}") from None
        out.append(parsed if parsed.tzinfo else parsed.replace(tzinfo=_UTC))
    return pa.array(out, type=spec.arrow_type)


def _json_text(values: list[Any], spec: FieldSpec, path: str) -> pa.Array:
    try:
        return _json_text_checked(values, spec, path)
    except RecursionError:
        pass
    row = 0
    for row, value in enumerate(values):  # slow path, only to name the row
        try:
            _json_text_checked([value], spec, path)
        except RecursionError:
            break
        except ColumnError as exc:  # an earlier value breaks its schema: name that one
            exc.row = row
            raise
    raise ColumnError(path, row, "value is nested too deeply to check or store")


def _json_text_checked(values: list[Any], spec: FieldSpec, path: str) -> pa.Array:
    if spec.json_schema is not None:
        validator = DEFAULT_JSONSCHEMA_VALIDATOR(spec.json_schema)
        for row, value in enumerate(values):
            if value is not None and not validator.is_valid(value):
                error = next(validator.iter_errors(value))
                raise ColumnError(path, row, f"does not match its schema: {error.message}")
    encode = _json_encoder.encode
    return pa.array([None if v is None else encode(v).decode() for v in values], type=pa.string())


def first_outside_range(array: pa.Array, arrow_type: pa.DataType) -> int | None:
    """Row of the first date or timestamp outside what readers can hold, if any."""
    low, high = _RANGES[arrow_type]
    extremes = pc.min_max(array)
    if extremes["min"].is_valid and (
        pc.less(extremes["min"], low).as_py() or pc.greater(extremes["max"], high).as_py()
    ):
        outside = pc.or_(pc.less(array, low), pc.greater(array, high))
        return int(pc.index(outside, value=True).as_py())
    return None


def _checked_range(array: pa.Array, values: list[Any], spec: FieldSpec, path: str) -> pa.Array:
    row = first_outside_range(array, spec.arrow_type)
    if row is not None:
        kind = "date" if spec.kind == Kind.DATE else "date-time"
        raise ColumnError(
            path,
            row,
            f"{kind} {_short(values[row])} is outside the years 1 to 9999 (UTC) that Parquet "
            "readers can hold",
        )
    return array


def _checked_finite(array: pa.Array, values: list[Any], path: str) -> pa.Array:
    finite = pc.is_finite(array)
    if pc.all(finite).as_py() is False:
        row = int(pc.index(finite, value=False).as_py())
        text = str(values[row])
        text = text if len(text) <= 40 else text[:37] + "..."
        raise ColumnError(
            path,
            row,
            f"number {text} does not fit in float64: it would be stored as infinity, which "
            "JSON Schema has no way to allow",
        )
    return array


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond float64: the same as a Decimal beyond it
        return math.inf


def _convert_checked(values: list[Any], spec: FieldSpec, path: str) -> pa.Array:
    """Convert values whose Python types were already checked against ``spec``."""
    kind = spec.kind
    if kind in (Kind.STR, Kind.BOOL):
        return pa.array(values, type=spec.arrow_type)
    if kind == Kind.INT:
        try:
            return pa.array(values, type=pa.int64())
        except (OverflowError, pa.ArrowInvalid):
            row = _first(values, lambda v: v is not None and not -(2**63) <= v < 2**63)
            raise ColumnError(
                path, row, f"integer {_short(values[row])} is outside the int64 range"
            ) from None
    if kind == Kind.FLOAT:
        try:
            floats = pa.array(values, type=pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Decimals (the msgspec reader's floats) and ints beyond 2**53.
            floats = pa.array(list(map(_to_float, values)), pa.float64())
        return _checked_finite(floats, values, path)
    if kind in (Kind.TIMESTAMP, Kind.DATE):
        strings = pa.array(values, type=pa.string())
        try:
            times = pc.cast(strings, spec.arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            times = _parse_datetimes(values, spec, path)
        return _checked_range(times, values, spec, path)
    if kind == Kind.TIME:
        for row, value in enumerate(values):
            if value is not None:
                try:
                    datetime.time.fromisoformat(value)
                except ValueError:
                    raise ColumnError(path, row, f"not a valid time: {_short(value)}") from None
        return pa.array(values, type=pa.string())
    if kind == Kind.LIST:
        return _convert_list(values, spec, path)
    if kind == Kind.STRUCT:
        mask = pa.array([d is None for d in values], type=pa.bool_()) if None in values else None
        children = _struct_children(values, spec, f"{path}.")
        return pa.StructArray.from_arrays(children, fields=list(spec.arrow_type), mask=mask)
    return _json_text(values, spec, path)


def _convert_list(values: list[Any], spec: FieldSpec, path: str) -> pa.Array:
    item = spec.item
    lengths = [0 if v is None else len(v) for v in values]
    flat = list(itertools.chain.from_iterable(filter(None, values)))
    item_path = f"{path}[]"
    try:
        has_null = _check_types(flat, item, item_path)
        if has_null and not item.nullable:
            raise ColumnError(item_path, flat.index(None), "null is not allowed")
        child = _convert_checked(flat, item, item_path)
    except ColumnError as exc:
        if exc.row is not None:
            ends = list(itertools.accumulate(lengths))
            exc.row = next(i for i, end in enumerate(ends) if end > exc.row)
        raise
    offsets = pa.array([0, *itertools.accumulate(lengths)], type=pa.int32())
    mask = pa.array([v is None for v in values], type=pa.bool_()) if None in values else None
    return pa.ListArray.from_arrays(offsets, child, type=spec.arrow_type, mask=mask)


def build_table(records: list[dict[str, Any]], spec: StreamSpec) -> pa.Table:
    """Check ``records`` against the stream spec and build one Arrow table (bulk)."""
    arrays = []
    has_null: dict[str, bool] = {}
    for field in spec.fields:
        name = field.name
        values = list(map(dict.get, records, itertools.repeat(name)))
        has_null[name] = _check_types(values, field, name)
        arrays.append(_convert_checked(values, field, name))
    top = FieldSpec("", Kind.STRUCT, False, pa.null(), frozenset(), spec.fields, spec.required)
    _check_children_presence(records, top, "", has_null)
    return pa.Table.from_arrays(arrays, schema=spec.arrow_schema)
