"""The import CSV of a bulk load (runtime/bulk_csv.py): fields typed as the Bolt writer's values, and every value the
CSV cannot carry exactly sent to Bolt instead of being stored differently."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import pytest
from neo4j.time import Duration

from pg2neo.mapping.convert import _FixedOffset
from pg2neo.mapping.plan import Column, SelectAs, ValueKind
from pg2neo.runtime.bulk_csv import (
    NotInCsv,
    bolt_only_props,
    csv_type,
    node_id,
    props_fields,
    quote,
    scalar_field,
)


def col(name: str, kind: ValueKind, element: ValueKind | None = None) -> Column:
    return Column(name, name, "t", kind, SelectAs.RAW, element)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (True, "true"),
        (0, "0"),
        (-9007199254740993, "-9007199254740993"),
        (0.1, "0.1"),
        (1e300, "1e+300"),
        (-0.0, "-0.0"),
        ("", '""'),
        ('a "b", c\nd', '"a ""b"", c\nd"'),
        (b"\x00\xff\x7f\x80", "0;-1;127;-128"),
        (dt.date(1, 1, 1), "0001-01-01"),
        (dt.datetime(2024, 2, 29, 10, 11, 12, 123456), "2024-02-29T10:11:12.123456"),
        (dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "2024-01-01T00:00:00+00:00"),
        (dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC")), "2024-01-01T00:00:00+00:00[UTC]"),
        (dt.time(23, 59, 59, 999999), "23:59:59.999999"),
        (dt.time(10, 0, tzinfo=_FixedOffset(dt.timedelta(hours=5, minutes=30))), "10:00:00+05:30"),
        (Duration(years=1, months=2, days=3, hours=4, seconds=6.5), "P14M3DT14406.500000000S"),
        ([1, 2, 3], "1;2;3"),
        (["x", "y"], '"x;y"'),
        (['q"uote', "x,y"], '"q""uote;x,y"'),
        ([0.5, 1e300], "0.5;1e+300"),
        ([True, False], "true;false"),
    ],
)
def test_fields_carry_the_value(value: object, field: str) -> None:
    assert scalar_field(value) == field


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, b"", [], ["a;b"], [""], [math.nan], Duration(days=-1), Duration(seconds=-1), object()],
)
def test_values_the_csv_cannot_carry_go_to_bolt(value: object) -> None:
    with pytest.raises(NotInCsv):
        scalar_field(value)


def test_header_types_follow_the_column_kinds() -> None:
    assert csv_type(col("a", ValueKind.NUMERIC)) == "double"
    assert csv_type(col("a", ValueKind.TIMESTAMPTZ)) == "datetime"
    assert csv_type(col("a", ValueKind.ARRAY, ValueKind.UUID)) == "string[]"
    assert csv_type(col("a", ValueKind.ARRAY, ValueKind.DATE)) is None
    assert bolt_only_props((col("a", ValueKind.ARRAY, ValueKind.DATE), col("b", ValueKind.INT))) == {"a"}


def test_row_fields_leave_absent_and_bolt_only_values_empty() -> None:
    columns = (col("a", ValueKind.INT), col("b", ValueKind.TEXT), col("c", ValueKind.ARRAY, ValueKind.INT))
    assert props_fields(columns, {"a": 1, "b": ""}, frozenset()) == ('1,"",', False)
    assert props_fields(columns, {"a": 1, "c": []}, frozenset()) == ("1,,", True)
    assert props_fields(columns, {"c": [1]}, frozenset({"c"})) == (",,", True)


def test_node_ids_are_equal_for_equal_converted_keys() -> None:
    assert node_id([1]) == node_id([1]) != node_id(["1"])
    assert node_id(["a", 2]) == quote("[s1:a\x1fi2]")
