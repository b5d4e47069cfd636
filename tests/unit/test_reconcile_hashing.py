"""Content hashes (mapping/hashing.py): equal data never reports drift, unequal data always does.

For every kind `mapping/resolve.py column_plan` gives a column (every scalar, every array element kind, interval,
json, enums and the text fallback), values as psycopg hands them over are converted with the apply stage's
converter, then turned into what the Neo4j driver reads back for the stored property (neo4j.time types, bytearray,
an instant in another offset, a Duration rebuilt from its stored fields). Both must hash the same; two different
converted values must not.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from neo4j.time import Date, DateTime, Duration, Time

from pg2neo.apply.cypher import HASH_PROP, graph_props
from pg2neo.mapping.convert import converter
from pg2neo.mapping.hashing import canonical, props_hash, props_hash_hex
from pg2neo.mapping.plan import Column, SelectAs, ValueKind

OFFSETS = st.sampled_from([dt.UTC, *(dt.timezone(dt.timedelta(minutes=m)) for m in (-570, -300, 60, 330, 765))])

SCALARS: dict[ValueKind, st.SearchStrategy[Any]] = {
    ValueKind.INT: st.integers(-(2**63), 2**63 - 1),
    ValueKind.FLOAT: st.floats(width=64),
    ValueKind.NUMERIC: st.decimals(
        allow_nan=False, allow_infinity=False, places=6, min_value=-(10**12), max_value=10**12
    ),
    ValueKind.BOOL: st.booleans(),
    ValueKind.TEXT: st.text(),
    ValueKind.UUID: st.uuids(),
    ValueKind.BYTES: st.binary(max_size=64),
    ValueKind.DATE: st.dates(),
    ValueKind.TIMESTAMP: st.datetimes(),
    ValueKind.TIMESTAMPTZ: st.datetimes(
        min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=OFFSETS
    ),
    ValueKind.TIME: st.times(),
    ValueKind.TIMETZ: st.times(timezones=OFFSETS),
    # interval: the reader selects PostgreSQL's iso_8601 text form
    ValueKind.INTERVAL: st.builds(
        lambda y, mo, d, h, mi, s, us: f"P{y}Y{mo}M{d}DT{h}H{mi}M{s}.{us:06d}S",
        st.integers(-100, 100),
        st.integers(-11, 11),
        st.integers(-400, 400),
        st.integers(-23, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 999_999),
    ),
    # json, jsonb, enums and every type without a Neo4j equivalent arrive as PostgreSQL's text form
    ValueKind.JSON: st.text(),
}
ARRAY_ELEMENTS = (
    ValueKind.INT,
    ValueKind.FLOAT,
    ValueKind.NUMERIC,
    ValueKind.BOOL,
    ValueKind.TEXT,
    ValueKind.UUID,
    ValueKind.DATE,
    ValueKind.TIMESTAMP,
    ValueKind.TIMESTAMPTZ,
)


def column(kind: ValueKind, element: ValueKind | None = None) -> Column:
    return Column("c", "c", kind.value, kind, SelectAs.RAW, element)


def read_back(value: Any) -> Any:
    """The Python value the Neo4j driver returns for a property written as `value`."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone(dt.timedelta(hours=-3)))  # same instant, another offset
        return DateTime.from_native(value)
    if isinstance(value, dt.date):
        return Date.from_native(value)
    if isinstance(value, dt.time):
        return Time.from_native(value)
    if isinstance(value, Duration):
        return Duration(months=value.months, days=value.days, seconds=value.seconds, nanoseconds=value.nanoseconds)
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, list):
        return [read_back(v) for v in value]
    return value


def kinds() -> list[tuple[ValueKind, ValueKind | None]]:
    return [(k, None) for k in SCALARS] + [(ValueKind.ARRAY, e) for e in ARRAY_ELEMENTS]


def values(kind: ValueKind, element: ValueKind | None) -> st.SearchStrategy[Any]:
    if kind is ValueKind.ARRAY:
        assert element is not None
        return st.lists(SCALARS[element], max_size=5)
    return SCALARS[kind]


def test_every_planned_kind_is_covered() -> None:
    covered = {k for k, _ in kinds()}
    assert covered == set(ValueKind)


@pytest.mark.parametrize(("kind", "element"), kinds(), ids=lambda k: getattr(k, "value", "-"))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_equal_data_hashes_equal(kind: ValueKind, element: ValueKind | None, data: st.DataObject) -> None:
    raw = data.draw(values(kind, element))
    stored = converter(column(kind, element))(raw)
    pg_side = {"id": 7, "c": stored}
    neo_side = {"id": 7, "c": read_back(stored), "_pg2neo_version": 3, HASH_PROP: "whatever"}
    assert props_hash(pg_side) == props_hash(graph_props(neo_side))


def _same(a: Any, b: Any) -> bool:
    """Whether Neo4j would hold the same property for the two converted values."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.time) and isinstance(b, dt.time):
        return a == b and a.utcoffset() == b.utcoffset()
    return type(a) is type(b) and bool(a == b)


@pytest.mark.parametrize(("kind", "element"), kinds(), ids=lambda k: getattr(k, "value", "-"))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_unequal_data_hashes_differ(kind: ValueKind, element: ValueKind | None, data: st.DataObject) -> None:
    convert = converter(column(kind, element))
    a = convert(data.draw(values(kind, element)))
    b = convert(data.draw(values(kind, element)))
    assume(not _same(a, b))
    assert canonical(a) != canonical(read_back(b))
    assert props_hash({"c": a}) != props_hash({"c": read_back(b)})


def test_property_set_changes_are_drift() -> None:
    base = {"id": 1, "name": "a", "tags": ["x", "y"]}
    h = props_hash(base)
    assert props_hash({**base, "extra": 1}) != h  # a property PostgreSQL does not have
    assert props_hash({"id": 1, "tags": ["x", "y"]}) != h  # a removed property
    assert props_hash({**base, "name": None}) == props_hash({"id": 1, "tags": ["x", "y"]})  # NULL = absent
    assert props_hash(dict(reversed(list(base.items())))) == h  # order does not matter
    assert props_hash(graph_props({**base, "_pg2neo_synced_at": 5})) == h  # pg2neo's own properties do not count


def test_type_tags_and_separators_cannot_collide() -> None:
    assert props_hash({"n": 1}) != props_hash({"n": 1.0})  # Neo4j keeps Integer and Float apart
    assert props_hash({"n": 1}) != props_hash({"n": "1"})
    assert props_hash({"b": True}) != props_hash({"b": 1})
    assert props_hash({"l": ["a", "b"]}) != props_hash({"l": ["a\x1fs1:b"]})
    assert props_hash({"a": "x", "b": "y"}) != props_hash({"a": "x\x1e1:b=s1:y"})
    assert props_hash({"l": []}) != props_hash({})
    assert props_hash({"d": Decimal("1.5").__float__()}) == props_hash({"d": 1.5})


def test_stamped_hash_is_the_hash_of_the_read_back_properties() -> None:
    props = {"id": "u", "at": dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC), "n": 3}
    assert props_hash_hex(props) == f"{props_hash({k: read_back(v) for k, v in props.items()}):016x}"
    assert graph_props({"a": 1, HASH_PROP: "x", "_pg2neo_version": 2}) == {"a": 1}
