"""The CSV of `neo4j-admin database import full` for a bulk load (pure: no server is touched here).

Place in the data flow: apply's values (after `mapping.convert`, the same ones the Bolt writer sends) → one CSV field
per property, typed in the header so that the import stores exactly what the writer stores: `long`, `double`,
`boolean`, `string`, `byte[]`, `date`, `localdatetime`, `datetime` (a zone id kept as `[UTC]`), `localtime`,
`time`, `duration` and arrays of the scalar ones. A value the CSV cannot carry exactly (an empty list or byte
string, a string element holding the array delimiter, a NaN) raises `NotInCsv`: its row is imported without that
property and written again through the Bolt writer after the import (runtime/bulk.py), so it still lands exactly.

Every string is quoted (`""` is the empty string, an empty field is an absent property); a field holding a line
break marks its file as multi-line for the import tool.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Final
from zoneinfo import ZoneInfo

from neo4j.time import Duration

from pg2neo.apply.cypher import HASH_PROP, REL_KEY, SYNCED_AT, VERSION
from pg2neo.mapping.hashing import canonical
from pg2neo.mapping.plan import Column, JoinTable, NodeTable, ValueKind

ARRAY_DELIMITER: Final = ";"

_SCALAR_TYPES: Final = {
    ValueKind.INT: "long",
    ValueKind.FLOAT: "double",
    ValueKind.NUMERIC: "double",
    ValueKind.BOOL: "boolean",
    ValueKind.TEXT: "string",
    ValueKind.UUID: "string",
    ValueKind.JSON: "string",
    ValueKind.BYTES: "byte[]",
    ValueKind.DATE: "date",
    ValueKind.TIMESTAMP: "localdatetime",
    ValueKind.TIMESTAMPTZ: "datetime",
    ValueKind.TIME: "localtime",
    ValueKind.TIMETZ: "time",
    ValueKind.INTERVAL: "duration",
}
# Array elements the CSV carries; arrays of other kinds are written through Bolt after the import.
_ARRAY_TYPES: Final = {
    ValueKind.INT: "long[]",
    ValueKind.FLOAT: "double[]",
    ValueKind.NUMERIC: "double[]",
    ValueKind.BOOL: "boolean[]",
    ValueKind.TEXT: "string[]",
    ValueKind.UUID: "string[]",
}


class NotInCsv(ValueError):
    """A value the import CSV cannot carry exactly; its row is written through Bolt after the import."""


def csv_type(column: Column) -> str | None:
    """The header type of a column's property; None when no value of it goes through the CSV."""
    if column.kind is ValueKind.ARRAY:
        return None if column.element_kind is None else _ARRAY_TYPES.get(column.element_kind)
    return _SCALAR_TYPES[column.kind]


def quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def node_id(key: list[Any]) -> str:
    """The import ID of a node: its converted key values, in `hashing.canonical` form (quoted)."""
    return quote(canonical(key))


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        return value.isoformat()
    if isinstance(value.tzinfo, ZoneInfo):
        return value.isoformat() + f"[{value.tzinfo.key}]"
    return value.isoformat()


def _duration(value: Duration) -> str:
    nanos = value.seconds * 1_000_000_000 + value.nanoseconds
    if value.months < 0 or value.days < 0 or nanos < 0:
        raise NotInCsv("a negative duration component")
    return f"P{value.months}M{value.days}DT{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}S"


def scalar_field(value: Any) -> str:
    """One converted property value as its CSV field (strings quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise NotInCsv("a non-finite float")
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bytes):
        if not value:
            raise NotInCsv("an empty byte string")
        return ARRAY_DELIMITER.join(str(b - 256 if b > 127 else b) for b in value)
    if isinstance(value, dt.datetime):
        return _datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, Duration):
        return _duration(value)
    if isinstance(value, list):
        return _array_field(value)
    raise NotInCsv(f"a value of type {type(value).__name__}")


def _array_field(values: list[Any]) -> str:
    if not values:
        raise NotInCsv("an empty list")  # an empty field would be no property at all
    if isinstance(values[0], str):
        for item in values:
            if ARRAY_DELIMITER in item or not item:
                raise NotInCsv("a list element holding the array delimiter, or empty")
        return quote(ARRAY_DELIMITER.join(values))
    if isinstance(values[0], float) and any(math.isnan(v) or math.isinf(v) for v in values):
        raise NotInCsv("a non-finite float")
    return ARRAY_DELIMITER.join("true" if v is True else "false" if v is False else repr(v) for v in values)


def stamp_fields(epoch: int, synced_at: dt.datetime) -> str:
    """The `_pg2neo_version` and `_pg2neo_synced_at` fields every loaded node and join relationship carries."""
    return f"{epoch},{synced_at.isoformat()}"


# -- headers ---------------------------------------------------------------------------------------------------------


def id_space(table: str) -> str:
    """The import ID space of a node table's label (one per table: keys are unique per table)."""
    return table.replace(".", "__")


def _prop_header(columns: tuple[Column, ...], props: tuple[str, ...] | None = None) -> list[str]:
    out = []
    for column in columns:
        if props is not None and column.prop not in props:
            continue
        kind = csv_type(column)
        # A column no CSV type carries keeps a string column that stays empty: its rows go through Bolt.
        out.append(f"{column.prop}:{kind or 'string'}")
    return out


def node_header(table: NodeTable) -> str:
    fields = [f":ID({id_space(table.table)})", *_prop_header(table.columns)]
    fields += [f"{HASH_PROP}:string", f"{VERSION}:long", f"{SYNCED_AT}:datetime"]
    return ",".join(fields) + "\n"


def stub_header(table: NodeTable) -> str:
    """Nodes that only a relationship creates (a row that became a dead letter): their key properties alone."""
    by_prop = {c.prop: c for c in table.columns}
    keys = tuple(by_prop[p] for p in table.key_props)
    return ",".join([f":ID({id_space(table.table)})", *_prop_header(keys)]) + "\n"


def link_header(start_table: str, end_table: str) -> str:
    return f":START_ID({id_space(start_table)}),:END_ID({id_space(end_table)})\n"


def join_header(table: JoinTable) -> str:
    fields = [f":START_ID({id_space(table.start.table)})", f":END_ID({id_space(table.end.table)})"]
    fields += _prop_header(table.columns, table.props)
    fields += [f"{REL_KEY}:string", f"{VERSION}:long", f"{SYNCED_AT}:datetime"]
    return ",".join(fields) + "\n"


def props_fields(columns: tuple[Column, ...], props: dict[str, Any], bolt_only: frozenset[str]) -> tuple[str, bool]:
    """The fields of a row's properties in header order, and whether one of them could not go into the CSV (the row
    is then written through Bolt after the import)."""
    out = []
    missing = False
    for column in columns:
        value = props.get(column.prop)
        if value is None:
            out.append("")
            continue
        if column.prop in bolt_only:
            out.append("")
            missing = True
            continue
        try:
            out.append(scalar_field(value))
        except NotInCsv:
            out.append("")
            missing = True
    return ",".join(out), missing


def bolt_only_props(columns: tuple[Column, ...]) -> frozenset[str]:
    """Properties no CSV type carries (arrays of temporal values): always written through Bolt."""
    return frozenset(c.prop for c in columns if csv_type(c) is None)
