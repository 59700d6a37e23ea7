"""Singer JSON Schema → Arrow schema, decided from the schema alone (never from the data).

Every part of a stream therefore has the same columns and types while its schema is unchanged,
even when a batch happens to hold only nulls for a column.

Mapping: ``integer`` → int64, ``number`` → float64, ``string`` → string, ``string`` +
``date-time`` → timestamp[us, UTC], ``string`` + ``date`` → date32 (``time`` stays a string),
``boolean`` → bool, arrays with typed ``items`` → list, objects with ``properties`` → struct.
Everything Parquet cannot hold as a typed column (objects without properties, ``anyOf``/``oneOf``
or multi-type mixes, arrays without ``items``, a schema with no type) → a string column holding
JSON text. So does a
typed subtree nested deeper than Parquet readers take: Arrow C++ (pyarrow, and the journal that
reads key columns with it) refuses a file whose schema is more than 100 levels deep, counting the
root, each struct as one level, each list as two and the leaf. Typed nesting is kept within
``MAX_PARQUET_DEPTH`` (64) levels; an object or array that would go deeper becomes one JSON text
column, checked against its sub-schema like the others. All Arrow fields
are nullable, so a later optional field never breaks a reader; the JSON Schema nullability is
enforced when records are converted (``columns.py``), not in the Parquet schema.

Each field also carries what the bulk validator needs: the Python types a JSON value of that
field may decode to, which nested fields are required, and, for JSON text columns, the
sub-schema to check each value against.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

__all__ = [
    "FieldSpec",
    "Kind",
    "StreamSpec",
    "needs_record_validator",
    "stream_spec",
]

NoneType = type(None)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
MAX_PARQUET_DEPTH = 64  # Parquet schema levels, root and leaf included (Arrow C++ refuses > 100)


class Kind:
    """Column kinds (how values are converted and checked)."""

    INT = "int"
    FLOAT = "float"
    STR = "str"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    DATE = "date"
    TIME = "time"  # kept as its ISO string; syntax checked like the SDK's per-record parse
    LIST = "list"
    STRUCT = "struct"
    JSON = "json"


_PY_TYPES: dict[str, frozenset[type]] = {
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float, decimal.Decimal}),
    "boolean": frozenset({bool}),
    "array": frozenset({list}),
    "object": frozenset({dict}),
    "null": frozenset({NoneType}),
}

# Keywords that constrain values beyond type/properties/items/required. A typed column whose
# schema uses one of them is also checked record by record with the SDK's jsonschema validator
# (see ``needs_record_validator``), so no bad record slips through the bulk check.
_VALUE_KEYWORDS = frozenset(
    {
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "propertyNames",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "if",
        "then",
        "else",
        "not",
        "allOf",
        "$ref",
        "$dynamicRef",
        "additionalItems",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)


@dataclass(frozen=True)
class FieldSpec:
    """One column (or nested field): its Arrow type and how to check and convert values."""

    name: str
    kind: str
    nullable: bool
    arrow_type: pa.DataType
    py_types: frozenset[type]
    children: tuple[FieldSpec, ...] = ()
    required: frozenset[str] = frozenset()
    json_schema: dict[str, Any] | None = None

    @property
    def item(self) -> FieldSpec:
        """The item spec of a list field."""
        return self.children[0]


@dataclass(frozen=True)
class StreamSpec:
    """The columns of one stream, in schema order, with the Arrow schema they make."""

    fields: tuple[FieldSpec, ...]
    required: frozenset[str]
    arrow_schema: pa.Schema = field(compare=False)

    def field(self, name: str) -> FieldSpec | None:
        """The top-level field called ``name``, if any."""
        return next((f for f in self.fields if f.name == name), None)


def _type_set(node: dict[str, Any]) -> tuple[set[str] | None, bool]:
    """Non-null JSON types of ``node`` (None = any) and whether null is allowed."""
    raw = node.get("type")
    if raw is None:
        return None, True
    types = {raw} if isinstance(raw, str) else set(raw)
    nullable = "null" in types
    types.discard("null")
    return types, nullable


def _is_null_branch(node: Any) -> bool:
    return isinstance(node, dict) and _type_set(node) == (set(), True)


def _json_field(name: str, node: dict[str, Any], nullable: bool) -> FieldSpec:
    types, _ = _type_set(node)
    only_type = set(node) <= {"type", "description", "title", "default", "examples", "format"}
    py_types: frozenset[type] = frozenset()
    if types is not None and only_type and "anyOf" not in node and "oneOf" not in node:
        py_types = frozenset().union(*(_PY_TYPES.get(t, frozenset()) for t in types))
    return FieldSpec(
        name=name,
        kind=Kind.JSON,
        nullable=nullable,
        arrow_type=pa.string(),
        # Empty py_types means "check each value against json_schema".
        py_types=py_types,
        json_schema=None if py_types else node,
    )


def field_spec(name: str, node: Any, depth: int = 1) -> FieldSpec:
    """Map one JSON Schema node to a field spec; ``depth``: Parquet levels above it (root: 1)."""
    if not isinstance(node, dict):
        node = {}
    for combinator in ("anyOf", "oneOf"):
        if combinator in node and "type" not in node:
            branches = [b for b in node[combinator] if isinstance(b, dict)]
            non_null = [b for b in branches if not _is_null_branch(b)]
            nullable = len(non_null) < len(node[combinator]) or any(
                _type_set(b)[1] for b in non_null
            )
            if len(non_null) == 1:
                inner = field_spec(name, non_null[0], depth)
                return _with_nullable(inner, nullable or inner.nullable)
            if non_null and all(
                _type_set(b)[0] == {"string"} and not (_VALUE_KEYWORDS & set(b)) for b in non_null
            ):
                return FieldSpec(name, Kind.STR, nullable, pa.string(), _PY_TYPES["string"])
            return _json_field(name, node, nullable)

    types, nullable = _type_set(node)
    if types is None or len(types) == 0:
        return _json_field(name, node, True)
    if types == {"integer", "number"}:
        types = {"number"}
    if len(types) > 1:
        return _json_field(name, node, nullable)
    (json_type,) = types
    if json_type == "string":
        fmt = node.get("format")
        if fmt == "date-time":
            return FieldSpec(name, Kind.TIMESTAMP, nullable, TIMESTAMP_TYPE, _PY_TYPES["string"])
        if fmt == "date":
            return FieldSpec(name, Kind.DATE, nullable, pa.date32(), _PY_TYPES["string"])
        if fmt == "time":
            return FieldSpec(name, Kind.TIME, nullable, pa.string(), _PY_TYPES["string"])
        return FieldSpec(name, Kind.STR, nullable, pa.string(), _PY_TYPES["string"])
    if json_type == "integer":
        return FieldSpec(name, Kind.INT, nullable, pa.int64(), _PY_TYPES["integer"])
    if json_type == "number":
        return FieldSpec(name, Kind.FLOAT, nullable, pa.float64(), _PY_TYPES["number"])
    if json_type == "boolean":
        return FieldSpec(name, Kind.BOOL, nullable, pa.bool_(), _PY_TYPES["boolean"])
    if json_type == "array":
        items = node.get("items")
        if not isinstance(items, dict) or not items or depth + 3 > MAX_PARQUET_DEPTH:
            return _json_field(name, node, nullable)  # a list takes 2 levels, its leaf 1 more
        item = field_spec("item", items, depth + 2)
        if item.kind == Kind.JSON:
            return _json_field(name, node, nullable)
        return FieldSpec(
            name,
            Kind.LIST,
            nullable,
            pa.list_(pa.field("item", item.arrow_type)),
            _PY_TYPES["array"],
            children=(item,),
        )
    if json_type == "object":
        properties = node.get("properties")
        if not isinstance(properties, dict) or not properties or depth + 2 > MAX_PARQUET_DEPTH:
            return _json_field(name, node, nullable)  # a struct takes 1 level, its leaves 1 more
        children = tuple(field_spec(key, sub, depth + 1) for key, sub in properties.items())
        struct = pa.struct([pa.field(c.name, c.arrow_type) for c in children])
        return FieldSpec(
            name,
            Kind.STRUCT,
            nullable,
            struct,
            _PY_TYPES["object"],
            children=children,
            required=frozenset(node.get("required") or ()),
        )
    return _json_field(name, node, nullable)


def _with_nullable(spec: FieldSpec, nullable: bool) -> FieldSpec:
    return FieldSpec(
        spec.name,
        spec.kind,
        nullable,
        spec.arrow_type,
        spec.py_types,
        spec.children,
        spec.required,
        spec.json_schema,
    )


def stream_spec(schema: dict[str, Any]) -> StreamSpec:
    """Column specs and the Arrow schema for a stream's Singer SCHEMA."""
    properties = schema.get("properties") or {}
    fields = tuple(field_spec(name, node) for name, node in properties.items())
    arrow_schema = pa.schema([pa.field(f.name, f.arrow_type) for f in fields])
    return StreamSpec(fields, frozenset(schema.get("required") or ()), arrow_schema)


def needs_record_validator(schema: dict[str, Any]) -> bool:
    """True when the schema constrains values in ways the bulk check does not enforce.

    The bulk check (``columns.py``) enforces types, nullability, ``required``, ``properties``,
    ``items`` and date/date-time syntax; JSON text columns are checked value by value against
    their whole sub-schema. Anything else (``enum``, ``pattern``, ``minimum``,
    ``additionalProperties: false``...) keeps the SDK's per-record validator on for the stream.
    """
    return _needs(schema, top=True)


def _needs(node: Any, *, top: bool = False) -> bool:
    if not isinstance(node, dict):
        return False
    if not top and field_spec("x", node).kind == Kind.JSON:
        return False  # validated per value against its own sub-schema
    if _VALUE_KEYWORDS & set(node):
        return True
    additional = node.get("additionalProperties", True)
    if additional is not True and node.get("properties"):
        return True
    for combinator in ("anyOf", "oneOf"):
        if any(_needs(b) for b in node.get(combinator) or ()):
            return True
    props = node.get("properties")
    if isinstance(props, dict) and any(_needs(sub) for sub in props.values()):
        return True
    items = node.get("items")
    return isinstance(items, dict) and _needs(items)
