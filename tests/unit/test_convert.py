"""Unit tests of mapping/convert.py: PostgreSQL values (as psycopg hands them over) to Neo4j property values.

Place in the data flow: between the reader's rows and the batch builder; pure functions, no servers.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal

import pytest
from neo4j.time import Duration

from pg2neo.mapping.convert import (
    OutOfRange,
    UnstorableValue,
    converter,
    key_from_text,
    parse_iso_interval,
    row_converter,
)
from pg2neo.mapping.plan import Column, SelectAs, ValueKind


def col(kind: ValueKind, name: str = "c", element: ValueKind | None = None) -> Column:
    return Column(name, name, "t", kind, SelectAs.RAW, element)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P1Y2M3DT4H5M6S", Duration(years=1, months=2, days=3, hours=4, minutes=5, seconds=6)),
        ("PT0.5S", Duration(nanoseconds=500_000_000)),
        ("PT1.000001S", Duration(seconds=1, nanoseconds=1000)),
        ("P-1Y-2M", Duration(years=-1, months=-2)),
        ("P3D", Duration(days=3)),
        ("P2W", Duration(days=14)),
        ("PT-3H", Duration(hours=-3)),
        ("PT0S", Duration()),
        ("P1M-1DT-1S", Duration(months=1, days=-1, seconds=-1)),
    ],
)
def test_iso_interval_parse_is_exact(text: str, expected: Duration) -> None:
    got = parse_iso_interval(text)
    assert (got.months, got.days, got.seconds, got.nanoseconds) == (
        expected.months,
        expected.days,
        expected.seconds,
        expected.nanoseconds,
    )


@pytest.mark.parametrize("text", ["1 day", "P1H", "", "1 year 2 mons", "00:00:01"])
def test_iso_interval_rejects_other_styles(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_iso_interval(text)


def test_interval_column_converts_through_iso() -> None:
    got = converter(col(ValueKind.INTERVAL))("P1Y2M3DT4H5M6.25S")
    assert isinstance(got, Duration)
    assert (got.months, got.days, got.seconds, got.nanoseconds) == (14, 3, 4 * 3600 + 5 * 60 + 6, 250_000_000)


def test_numeric_becomes_float_including_nan_and_infinity() -> None:
    fn = converter(col(ValueKind.NUMERIC))
    assert fn(Decimal("1234.56")) == 1234.56 and isinstance(fn(Decimal("1")), float)
    assert math.isnan(fn(Decimal("NaN")))
    assert fn(Decimal("Infinity")) == math.inf
    assert fn(Decimal("-Infinity")) == -math.inf


def test_floats_pass_through_nan_and_infinity() -> None:
    fn = converter(col(ValueKind.FLOAT))
    assert math.isnan(fn(float("nan")))
    assert fn(float("inf")) == math.inf


def test_scalars() -> None:
    u = uuid.uuid4()
    assert converter(col(ValueKind.UUID))(u) == str(u)
    assert converter(col(ValueKind.BYTES))(memoryview(b"\x00\xff")) == b"\x00\xff"
    assert converter(col(ValueKind.TEXT))("x") == "x"
    assert converter(col(ValueKind.INT))(7) == 7
    assert converter(col(ValueKind.BOOL))(False) is False
    moment = dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC)
    assert converter(col(ValueKind.TIMESTAMPTZ))(moment) == moment
    assert converter(col(ValueKind.DATE))(dt.date(2024, 1, 1)) == dt.date(2024, 1, 1)


@pytest.mark.parametrize("kind", [ValueKind.DATE, ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ, ValueKind.TIME])
def test_out_of_range_temporal_is_unstorable(kind: ValueKind) -> None:
    with pytest.raises(UnstorableValue, match=r"column `opened`: the value 'infinity' has no Neo4j temporal") as exc:
        converter(col(kind, "opened"))(OutOfRange("infinity"))
    assert "types: {opened: string}" in str(exc.value)
    assert exc.value.column == "opened"


def test_arrays_convert_elements() -> None:
    u = uuid.uuid4()
    assert converter(col(ValueKind.ARRAY, element=ValueKind.NUMERIC))([Decimal("1.5"), Decimal("2")]) == [1.5, 2.0]
    assert converter(col(ValueKind.ARRAY, element=ValueKind.UUID))([u]) == [str(u)]
    assert converter(col(ValueKind.ARRAY, element=ValueKind.TEXT))(["a", ""]) == ["a", ""]
    assert converter(col(ValueKind.ARRAY, element=ValueKind.INT))([]) == []


def test_array_with_null_is_unstorable() -> None:
    with pytest.raises(UnstorableValue, match="contains NULL") as exc:
        converter(col(ValueKind.ARRAY, "tags", ValueKind.TEXT))(["a", None])
    assert "types: {tags: json}" in str(exc.value)


def test_multidimensional_array_is_unstorable() -> None:
    with pytest.raises(UnstorableValue, match="multi-dimensional"):
        converter(col(ValueKind.ARRAY, "grid", ValueKind.INT))([[1, 2], [3, 4]])


def test_out_of_range_inside_a_date_array_is_unstorable() -> None:
    with pytest.raises(UnstorableValue, match="no Neo4j temporal"):
        converter(col(ValueKind.ARRAY, "days", ValueKind.DATE))([dt.date(2020, 1, 1), OutOfRange("infinity")])


def test_row_converter_omits_null_and_uses_property_names() -> None:
    columns = (
        Column("id", "pg_id", "int8", ValueKind.INT, SelectAs.RAW),
        Column("note", "note", "text", ValueKind.TEXT, SelectAs.RAW),
        Column("amount", "amount", "numeric", ValueKind.NUMERIC, SelectAs.RAW),
    )
    convert = row_converter(columns)
    assert convert((1, None, Decimal("2.5"))) == {"pg_id": 1, "amount": 2.5}
    assert convert((None, None, None)) == {}


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (ValueKind.INT, "42", 42),
        (ValueKind.NUMERIC, "1.50", 1.5),
        (ValueKind.FLOAT, "-0.25", -0.25),
        (ValueKind.BOOL, "true", True),
        (ValueKind.BOOL, "false", False),
        (ValueKind.TEXT, "a b", "a b"),
        (ValueKind.UUID, "0b6c8c1e-5a57-4c4e-9d6e-2f2a0f9d1a10", "0b6c8c1e-5a57-4c4e-9d6e-2f2a0f9d1a10"),
        (ValueKind.BYTES, "\\x00ff", b"\x00\xff"),
        (ValueKind.DATE, "2024-02-29", dt.date(2024, 2, 29)),
    ],
)
def test_key_from_text_matches_the_converted_key(kind: ValueKind, text: str, expected: object) -> None:
    assert key_from_text(col(kind), text) == expected


def test_key_from_text_timestamptz_is_aware() -> None:
    got = key_from_text(col(ValueKind.TIMESTAMPTZ), "2024-01-02 03:04:05.5+00")
    assert got == dt.datetime(2024, 1, 2, 3, 4, 5, 500_000, tzinfo=dt.UTC)


def test_a_dead_letter_names_every_bad_column_not_only_the_first() -> None:
    from pg2neo.mapping.convert import UnstorableRow

    convert = row_converter((col(ValueKind.DATE, "born"), col(ValueKind.TEXT, "name"), col(ValueKind.NUMERIC, "n")))
    with pytest.raises(UnstorableRow) as caught:
        convert((OutOfRange("infinity"), "ok", Decimal("1e400")))
    assert [f.column for f in caught.value.failures] == ["born", "n"]
    assert "`born`" in str(caught.value) and "`n`" in str(caught.value)


def test_a_numeric_beyond_float_is_refused_not_stored_as_infinity() -> None:
    with pytest.raises(UnstorableValue, match="beyond the range of a Neo4j Float"):
        converter(col(ValueKind.NUMERIC))(Decimal("1e400"))
    assert converter(col(ValueKind.NUMERIC))(Decimal("NaN")) != converter(col(ValueKind.NUMERIC))(Decimal("NaN"))
    assert math.isinf(converter(col(ValueKind.FLOAT))(float("inf")))


def test_a_converter_that_chokes_is_this_rows_failure_named_by_its_column() -> None:
    from pg2neo.mapping.convert import UnstorableRow

    convert = row_converter((col(ValueKind.INTERVAL, "span"),))
    with pytest.raises(UnstorableRow) as caught:
        convert(("not an interval",))
    assert caught.value.failures[0].column == "span" and "cannot be converted" in str(caught.value)


def test_timetz_packs_with_a_fixed_offset_the_driver_accepts() -> None:
    value = converter(col(ValueKind.TIMETZ))(dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))))
    assert value.tzinfo is not None and value.tzinfo.utcoffset(value) == dt.timedelta(hours=5, minutes=30)
