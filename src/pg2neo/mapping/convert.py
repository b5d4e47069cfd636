"""PostgreSQL values (as psycopg hands them over) to Neo4j property values, by the rules of docs/mapping.md.

Pure functions: a value Neo4j cannot hold raises `UnstorableValue` with the reason and the fix, and the row goes
to the dead-letter table instead of being dropped or silently altered.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from neo4j.time import Duration

from pg2neo.mapping.plan import Column, ValueKind


class UnstorableValue(ValueError):
    """A value of one column that Neo4j cannot store; the message says why and how to map it instead."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"column `{column}`: {reason}")
        self.column = column


class OutOfRange:
    """What the reader's loaders return for a date/time PostgreSQL holds but Python cannot (infinity, BC, >9999)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"OutOfRange({self.text!r})"


_ISO_INTERVAL = re.compile(
    r"^P(?:(?P<y>-?\d+)Y)?(?:(?P<mo>-?\d+)M)?(?:(?P<w>-?\d+)W)?(?:(?P<d>-?\d+)D)?"
    r"(?:T(?:(?P<h>-?\d+)H)?(?:(?P<mi>-?\d+)M)?(?:(?P<s>-?\d+(?:\.\d+)?)S)?)?$"
)


def parse_iso_interval(text: str) -> Duration:
    """An interval in PostgreSQL's `iso_8601` style (`P1Y2M3DT4H5M6.5S`) to an exact Neo4j Duration."""
    match = _ISO_INTERVAL.match(text)
    if match is None:
        raise ValueError(f"not an ISO 8601 interval: {text!r}")
    parts = {k: v for k, v in match.groupdict().items() if v is not None}
    seconds = Decimal(parts.get("s", "0"))
    whole = int(seconds)
    nanos = int((seconds - whole) * 1_000_000_000)
    return Duration(
        years=int(parts.get("y", 0)),
        months=int(parts.get("mo", 0)),
        weeks=int(parts.get("w", 0)),
        days=int(parts.get("d", 0)),
        hours=int(parts.get("h", 0)),
        minutes=int(parts.get("mi", 0)),
        seconds=whole,
        nanoseconds=nanos,
    )


def _numeric(value: Decimal) -> float:
    return float(value)


def _passthrough(value: Any) -> Any:
    return value


def _temporal(column: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, OutOfRange):
            raise UnstorableValue(
                column,
                f"the value {value.text!r} has no Neo4j temporal equivalent; map the column with "
                f"`types: {{{column}: string}}` to store PostgreSQL's text form",
            )
        return value

    return convert


def _element(kind: ValueKind | None, column: str) -> Callable[[Any], Any]:
    if kind is ValueKind.NUMERIC:
        return _numeric
    if kind is ValueKind.UUID:
        return str
    if kind in (ValueKind.DATE, ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ):
        return _temporal(column)
    return _passthrough


def converter(column: Column) -> Callable[[Any], Any]:
    """The function that turns this column's non-NULL values into Neo4j values."""
    kind = column.kind
    if kind is ValueKind.NUMERIC:
        return _numeric
    if kind is ValueKind.UUID:
        return str
    if kind is ValueKind.BYTES:
        return bytes
    if kind is ValueKind.INTERVAL:
        return parse_iso_interval
    if kind in (ValueKind.DATE, ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ, ValueKind.TIME, ValueKind.TIMETZ):
        return _temporal(column.name)
    if kind is ValueKind.ARRAY:
        element = _element(column.element_kind, column.name)
        name = column.name

        def convert_array(value: list[Any]) -> list[Any]:
            out = []
            for item in value:
                if item is None:
                    raise UnstorableValue(
                        name,
                        "the array contains NULL, and Neo4j lists cannot hold null; map the column with "
                        f"`types: {{{name}: json}}` (a JSON text) or `types: {{{name}: string}}`",
                    )
                if isinstance(item, list):
                    raise UnstorableValue(
                        name,
                        "multi-dimensional arrays have no Neo4j equivalent (lists of lists are not properties); "
                        f"map the column with `types: {{{name}: json}}`",
                    )
                out.append(element(item))
            return out

        return convert_array
    return _passthrough


def row_converter(columns: tuple[Column, ...]) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """Build the function that turns one selected row (in `columns` order) into a property map; NULL omits it."""
    plan = [(index, column.prop, converter(column)) for index, column in enumerate(columns)]

    def convert(row: tuple[Any, ...]) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for index, prop, fn in plan:
            value = row[index]
            if value is not None:
                props[prop] = fn(value)
        return props

    return convert


_CHAR_N = re.compile(r"^character\((\d+)\)$")


def key_from_text(column: Column, text: str) -> Any:
    """A key value queued as PostgreSQL text (`::text`) back to the Neo4j value its column converts to.

    The text is produced under pinned session settings (UTC, ISO dates, ISO 8601 intervals: see
    capture/outbox_sql.py and capture/reader.py), so it does not depend on the writer's session.
    """
    kind = column.kind
    try:
        if kind is ValueKind.INT:
            return int(text)
        if kind in (ValueKind.FLOAT, ValueKind.NUMERIC):
            return float(text)
        if kind is ValueKind.BOOL:
            return text == "true"
        if kind is ValueKind.BYTES:
            return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()
        if kind is ValueKind.DATE:
            return dt.date.fromisoformat(text)
        if kind in (ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ):
            return dt.datetime.fromisoformat(text)
        if kind in (ValueKind.TIME, ValueKind.TIMETZ):
            return dt.time.fromisoformat(text)
        if kind is ValueKind.INTERVAL:
            return parse_iso_interval(text)
    except ValueError as exc:
        raise UnstorableValue(column.name, f"the key {text!r} has no Neo4j equivalent ({exc})") from exc
    if column.type_name == "character":
        return text.ljust(1)
    match = _CHAR_N.match(column.type_name)
    if match:  # char(n): PostgreSQL's text form drops the padding the column's values carry
        return text.ljust(int(match.group(1)))
    return text
