"""Debezium change events (JSON converter, no schemas) to the rows pg2neo's apply core takes (pure).

Place in the data flow: transport (Kafka) -> apply. A Debezium event carries the row, typed by the connector settings
of `transport/debezium.py`; this module turns each value into the value PostgreSQL's reader hands to the apply core
in trigger mode (same forms, so the same `convert` rules, hashes and Cypher apply), and gives each event its source
position: the version its writes are stamped and guarded with. A foreign key's values are the referenced columns'
(the event has no join to the target's node key): the core's `by_reference` builder converts them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pg2neo.mapping.convert import OutOfRange
from pg2neo.mapping.plan import Column, JoinTable, Mapping, NodeTable, SelectAs, ValueKind
from pg2neo.transport.debezium import PLACEHOLDER

_PLACEHOLDER_HEX = PLACEHOLDER.encode().hex()  # in case a bytea placeholder arrives as its bytes

_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH_TS = dt.datetime(1970, 1, 1)
_MICROS_PER_DAY = 86_400_000_000


class BadEvent(ValueError):
    """An event the sink cannot apply; the message is the reason written with it to the dead-letter topic."""


class Unavailable:
    """An unchanged TOASTed value: Debezium did not send it (`__debezium_unavailable_value`)."""

    __repr__ = object.__repr__


UNAVAILABLE = Unavailable()


def _is_placeholder(value: Any) -> bool:
    return value in (PLACEHOLDER, _PLACEHOLDER_HEX) or (isinstance(value, list) and value == [PLACEHOLDER])


# Debezium's names for numeric's special values (decimal.handling.mode=string), as PostgreSQL writes them.
_SPECIAL_NUMERIC = {"POSITIVE_INFINITY": "Infinity", "NEGATIVE_INFINITY": "-Infinity", "NAN": "NaN"}


def _decimal_text(value: Any) -> str:
    text = str(value)
    return _SPECIAL_NUMERIC.get(text.upper(), text)


def _numeric_text(value: Any) -> str:
    text = _decimal_text(value)
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise BadEvent(f"not a decimal: {text!r}") from exc
    return text if not number.is_finite() else format(number, "f")


def _timestamp(value: Any) -> Any:
    try:
        return _EPOCH_TS + dt.timedelta(microseconds=int(value))
    except OverflowError:
        return OutOfRange(str(value))


def _timestamptz(value: Any) -> Any:
    try:
        return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return OutOfRange(str(value))


def _date(value: Any) -> Any:
    try:
        return _EPOCH_DATE + dt.timedelta(days=int(value))
    except OverflowError:
        return OutOfRange(str(value))


def _time(value: Any) -> Any:
    micros = int(value)
    if not 0 <= micros < _MICROS_PER_DAY:
        return OutOfRange("24:00:00" if micros == _MICROS_PER_DAY else str(value))
    seconds, micro = divmod(micros, 1_000_000)
    return dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60, micro)


def _scalar(kind: ValueKind | None, type_name: str, select_as: SelectAs) -> Callable[[Any], Any]:
    if kind is ValueKind.NUMERIC or (kind is not ValueKind.ARRAY and type_name.startswith("numeric")):
        if select_as is SelectAs.TEXT:
            return _numeric_text
        if select_as is SelectAs.FLOAT:
            return lambda v: float(Decimal(_decimal_text(v)))
        return lambda v: Decimal(_decimal_text(v))
    if kind is ValueKind.INT:
        return int
    if kind is ValueKind.FLOAT:
        return float  # JSON numbers, and "NaN"/"Infinity" texts
    if kind is ValueKind.BOOL:
        return bool
    if kind is ValueKind.BYTES:
        return bytes.fromhex
    if kind is ValueKind.DATE:
        return _date
    if kind is ValueKind.TIMESTAMP:
        return _timestamp
    if kind is ValueKind.TIMESTAMPTZ:
        return _timestamptz
    if kind is ValueKind.TIME:
        return _time
    return str  # text, enums, uuid, json/jsonb text, intervals (ISO 8601, as pg2neo reads them)


def decoder(column: Column) -> Callable[[Any], Any]:
    """The function from a Debezium value of `column` (not NULL) to the value the PostgreSQL reader gives."""
    if column.kind is ValueKind.ARRAY:
        element = _scalar(column.element_kind, "", SelectAs.RAW)

        def array(value: Any) -> Any:
            if not isinstance(value, list):
                raise BadEvent(f"column `{column.name}`: expected an array, got {type(value).__name__}")
            return [None if v is None else element(v) for v in value]

        return array
    return _scalar(column.kind, column.type_name, column.select_as)


def key_text(column: Column, value: Any) -> str:
    """PostgreSQL's text of a key value (what the capture triggers queue), from the reader-form value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _numeric_text(value)
    return str(value)


@dataclass(frozen=True)
class SourcePosition:
    """Where an event stands in PostgreSQL's history, as the version its writes carry (before the sink's base).

    A streamed change's version is its own LSN (`source.lsn`). Changes to one row follow each other in LSN order
    whatever the transactions around them (the second waits for the first's row lock, so it is written later), and
    so do a row and the rows its foreign keys reference (the check takes a lock on the referenced row); a change
    re-sent by Debezium after a restart carries the same LSN, so replays are idempotent. Snapshot reads carry 0: a
    transaction that was open during the snapshot can have written its rows at LSNs below the snapshot's, and its
    changes must still win over the snapshot's rows. (Debezium's `source.sequence[0]`, the commit before the event's
    transaction, is not used: after a Connect restart it is restored from the last committed offset, later than the
    replayed transactions' own predecessors, and replayed events then outranked newer ones.)
    """

    epoch: int
    snapshot: bool
    commit_ms: int | None


def source_position(source: dict[str, Any]) -> SourcePosition:
    snapshot = str(source.get("snapshot", "false")) not in ("false", "")
    lsn = source.get("lsn")
    if lsn is None:
        raise BadEvent("the event has no source position (source.lsn)")
    try:
        position = int(lsn)
    except (TypeError, ValueError) as exc:
        raise BadEvent(f"the event's source position {lsn!r} is not an LSN") from exc
    ts = source.get("ts_ms")
    return SourcePosition(0 if snapshot else position, snapshot, int(ts) if isinstance(ts, int) else None)


@dataclass(frozen=True)
class Change:
    """One decoded event of a mapped table."""

    entry: NodeTable | JoinTable
    op: str  # c u r d t
    key: tuple[str, ...]  # the row key's texts (empty for a truncate)
    row: tuple[Any, ...] | None  # the reader-form row for an upsert (may hold UNAVAILABLE), None for a delete
    position: SourcePosition
    toasted: tuple[str, ...] = ()  # property names whose value did not arrive (unchanged TOAST)
    previous_key: tuple[str, ...] | None = None  # an update that changed the row's key: the key it had


class EventDecoder:
    """Decodes the events of one mapping; built once."""

    def __init__(self, mapping: Mapping, tables_by_topic: dict[str, str]) -> None:
        self.mapping = mapping
        self.tables_by_topic = tables_by_topic
        self._key_cols: dict[str, list[tuple[str, Callable[[Any], Any], Column]]] = {}
        self._cols: dict[str, list[tuple[str, Callable[[Any], Any], Column]]] = {}
        self._links: dict[str, list[list[tuple[str, Callable[[Any], Any]]]]] = {}
        for entry in mapping.entries:
            by_name = {c.name: c for c in entry.columns}
            key_plans = [by_name[name] for name in entry.key_columns] if isinstance(entry, NodeTable) else []
            if isinstance(entry, JoinTable):
                key_plans = [_key_plan(entry, name, by_name) for name in entry.key_columns]
            self._key_cols[entry.table] = [(c.name, decoder(c), c) for c in key_plans]
            self._cols[entry.table] = [(c.name, decoder(c), c) for c in entry.columns]
            links: list[list[tuple[str, Callable[[Any], Any]]]] = []
            ends = (
                [(r.target_table, r.columns, r.ref_columns) for r in entry.fk_rels]
                if isinstance(entry, NodeTable)
                else [(e.table, e.columns, e.ref_columns) for e in (entry.start, entry.end)]
            )
            for target_table, columns, ref_columns in ends:
                # The row's foreign-key columns, in the order of the referenced columns, decoded as the target's
                # columns are (the core's `by_reference` builder converts them with the target's converters).
                target_columns = {c.name: c for c in mapping.node(target_table).columns}
                target_columns.update({c.name: c for c in mapping.node(target_table).key_column_objs})
                pairs = zip(ref_columns, columns, strict=True)
                links.append([(column, decoder(_ref_plan(target_columns, ref))) for ref, column in pairs])
            self._links[entry.table] = links

    def decode(self, topic: str, value: bytes) -> Change:
        table = self.tables_by_topic.get(topic)
        entry = None if table is None else self.mapping.entry(table)
        if entry is None:
            raise BadEvent(f"topic {topic!r} is not one of a mapped table")
        try:
            event = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadEvent(f"not a JSON document ({exc})") from exc
        if not isinstance(event, dict) or "op" not in event or not isinstance(event.get("source"), dict):
            raise BadEvent("not a Debezium change event (no `op` and `source`; schemas.enable must be false)")
        op = event["op"]
        position = source_position(event["source"])
        if op == "t":
            return Change(entry, op, (), None, position)
        if op == "d":
            return Change(entry, op, self._key(entry, event.get("before"), "before"), None, position)
        if op in ("c", "u", "r"):
            after = event.get("after")
            if not isinstance(after, dict):
                raise BadEvent(f"a `{op}` event without `after`")
            missing = [name for name, _, _ in self._cols[entry.table] if name not in after]
            if missing:
                raise BadEvent(
                    f"columns {missing} are missing from the event: the table's columns changed, or the connector "
                    "was configured for another mapping (run `pg2neo kafka register` again)"
                )
            key = self._key(entry, after, "after")
            values: list[Any] = [key]
            toasted: list[str] = []
            for name, decode, column in self._cols[entry.table]:
                raw = after[name]
                if raw is None:
                    values.append(None)
                elif _is_placeholder(raw):
                    values.append(UNAVAILABLE)
                    toasted.append(column.prop)
                else:
                    values.append(_decoded(decode, raw, name))
            for link in self._links[entry.table]:
                for name, decode in link:
                    raw = after.get(name)
                    values.append(None if raw is None else _decoded(decode, raw, name))
            return Change(entry, op, key, tuple(values), position, tuple(toasted), self._previous(entry, event, key))
        raise BadEvent(f"unknown operation {op!r}")

    def _previous(self, entry: NodeTable | JoinTable, event: dict[str, Any], key: tuple[str, ...]) -> Any:
        """The key before an update, when the event carries it (replica identity) and it differs."""
        before = event.get("before")
        if event["op"] != "u" or not isinstance(before, dict):
            return None
        if any(before.get(name) is None for name, _, _ in self._key_cols[entry.table]):
            return None
        previous = self._key(entry, before, "before")
        return previous if previous != key else None

    def _key(self, entry: NodeTable | JoinTable, image: Any, where: str) -> tuple[str, ...]:
        if not isinstance(image, dict):
            raise BadEvent(f"the event has no `{where}` image")
        out = []
        for name, decode, column in self._key_cols[entry.table]:
            raw = image.get(name)
            if raw is None:
                raise BadEvent(
                    f"the `{where}` image lacks the key column `{name}`: set the table's REPLICA IDENTITY to the "
                    f"key's unique index (`ALTER TABLE {entry.table} REPLICA IDENTITY USING INDEX ...`) or FULL"
                )
            out.append(key_text(column, _decoded(decode, raw, name)))
        return tuple(out)


def _ref_plan(columns: dict[str, Column], name: str) -> Column:
    """A referenced column of a target node: planned as the target plans it (as plain text when unmapped; the
    mapping check refuses that case for lookups by reference)."""
    if name in columns:
        return columns[name]
    return Column(name, name, "text", ValueKind.TEXT, SelectAs.TEXT)


def _key_plan(entry: JoinTable, name: str, by_name: dict[str, Column]) -> Column:
    """A join table's key column is often an endpoint column (not a property): plan it as plain text then."""
    if name in by_name:
        return by_name[name]
    return Column(name, name, "text", ValueKind.TEXT, SelectAs.TEXT)


def _decoded(decode: Callable[[Any], Any], raw: Any, name: str) -> Any:
    try:
        return decode(raw)
    except BadEvent:
        raise
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        raise BadEvent(f"column `{name}`: cannot decode {str(raw)[:200]!r} ({exc})") from exc
