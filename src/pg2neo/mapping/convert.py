"""PostgreSQL values (as psycopg hands them over) to Neo4j property values, by the rules of docs/mapping.md.

Pure functions: a value Neo4j cannot hold raises `UnstorableValue` with the reason and the fix, and the row goes
to the dead-letter table instead of being dropped or silently altered.
"""

from __future__ import annotations

import datetime as dt
import math
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


def _numeric_for(column: str) -> Callable[[Decimal], float]:
    def convert(value: Decimal) -> float:
        number = float(value)
        if math.isinf(number) and value.is_finite():
            # float() rounds 1e400 to Infinity without a word: a different value, so refuse it
            raise UnstorableValue(
                column,
                f"the value {value} is beyond the range of a Neo4j Float; map the column with "
                f"`types: {{{column}: string}}` to store its exact text",
            )
        return number

    return convert


class _FixedOffset(dt.tzinfo):
    """A fixed UTC offset whose `utcoffset` accepts a `time` as well as a datetime.

    The Neo4j driver packs a `datetime.time` with `value.tzinfo.utcoffset(value)`, which `datetime.timezone`
    refuses for a time (TypeError): a `timetz` value stopped the whole batch."""

    __slots__ = ("_offset",)

    def __init__(self, offset: dt.timedelta) -> None:
        self._offset = offset

    def utcoffset(self, _: object) -> dt.timedelta:
        return self._offset

    def dst(self, _: object) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, _: object) -> str:
        return str(dt.timezone(self._offset))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FixedOffset) and other._offset == self._offset

    def __hash__(self) -> int:
        return hash(self._offset)

    def __repr__(self) -> str:
        return f"_FixedOffset({self._offset!r})"


def _timetz(column: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, OutOfRange):
            return _temporal(column)(value)
        offset = value.utcoffset() if isinstance(value, dt.time) else None
        if offset is None:
            return value
        return value.replace(tzinfo=_FixedOffset(offset))

    return convert


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
        return _numeric_for(column)
    if kind is ValueKind.UUID:
        return str
    if kind in (ValueKind.DATE, ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ):
        return _temporal(column)
    return _passthrough


def converter(column: Column) -> Callable[[Any], Any]:
    """The function that turns this column's non-NULL values into Neo4j values."""
    kind = column.kind
    if kind is ValueKind.NUMERIC:
        return _numeric_for(column.name)
    if kind is ValueKind.UUID:
        return str
    if kind is ValueKind.BYTES:
        return bytes
    if kind is ValueKind.INTERVAL:
        return parse_iso_interval
    if kind is ValueKind.TIMETZ:
        return _timetz(column.name)
    if kind in (ValueKind.DATE, ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ, ValueKind.TIME):
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


class UnstorableRow(ValueError):
    """Every column of one row that cannot be converted (a dead letter names them all, not only the first)."""

    def __init__(self, failures: list[UnstorableValue]) -> None:
        super().__init__("; ".join(str(f) for f in failures))
        self.failures = failures


def unstorable(column: str, exc: Exception) -> UnstorableValue:
    """Any failure to convert one value, as an `UnstorableValue` naming the column (a bug in a converter, or a
    value shape nobody foresaw, must isolate its row, not stop the batch)."""
    if isinstance(exc, UnstorableValue):
        return exc
    return UnstorableValue(column, f"the value cannot be converted ({type(exc).__name__}: {exc})")


def row_converter(columns: tuple[Column, ...]) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """Build the function that turns one selected row (in `columns` order) into a property map; NULL omits it.

    Raises `UnstorableRow` naming every column whose value cannot be converted."""
    plan = [(index, column.prop, column.name, converter(column)) for index, column in enumerate(columns)]

    def convert(row: tuple[Any, ...]) -> dict[str, Any]:
        props: dict[str, Any] = {}
        failures: list[UnstorableValue] = []
        for index, prop, name, fn in plan:
            value = row[index]
            if value is not None:
                try:
                    props[prop] = fn(value)
                except Exception as exc:  # every failure is this row's, named by its column
                    failures.append(unstorable(name, exc))
        if failures:
            raise UnstorableRow(failures)
        return props

    return convert


_CHAR_N = re.compile(r"^character\((\d+)\)$")


def key_from_text(column: Column, text: str) -> Any:
    """A key value queued as PostgreSQL text (`::text`) back to the Neo4j value its column converts to.

    The text is produced under pinned session settings (UTC, ISO dates, ISO 8601 intervals: see
    capture/triggers.py and capture/reader.py), so it does not depend on the writer's session.
    """
    kind = column.kind
    try:
        if kind is ValueKind.INT:
            return int(text)
        if kind is ValueKind.FLOAT:
            return float(text)
        if kind is ValueKind.NUMERIC:
            return _numeric_for(column.name)(Decimal(text))
        if kind is ValueKind.BOOL:
            return text == "true"
        if kind is ValueKind.BYTES:
            return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()
        if kind is ValueKind.DATE:
            return dt.date.fromisoformat(text)
        if kind in (ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ):
            return dt.datetime.fromisoformat(text)
        if kind is ValueKind.TIME:
            return dt.time.fromisoformat(text)
        if kind is ValueKind.TIMETZ:
            return _timetz(column.name)(dt.time.fromisoformat(text))
        if kind is ValueKind.INTERVAL:
            return parse_iso_interval(text)
    except UnstorableValue:
        raise
    except (ValueError, ArithmeticError) as exc:
        raise UnstorableValue(column.name, f"the key {text!r} has no Neo4j equivalent ({exc})") from exc
    if column.type_name == "character":
        return text.ljust(1)
    match = _CHAR_N.match(column.type_name)
    if match:  # char(n): PostgreSQL's text form drops the padding the column's values carry
        return text.ljust(int(match.group(1)))
    return text
