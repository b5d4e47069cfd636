"""The fast route of mapping/hashing.py gives the original texts and hashes, byte for byte.

Hashes are stamped on every node and compared by verify with hashes of PostgreSQL rows and of Neo4j reads, so any
change of a text is drift on every stored node. `_reference_*` below is a frozen copy of the implementation before
the type-dispatch table (issue 17); every value kind psycopg, `convert` and the Neo4j driver hand over is drawn,
nested in lists and maps, and both must give the same text (or both fail with the same exception type).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import math
import zoneinfo
from collections import OrderedDict, UserDict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pytest
import pytz  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from neo4j.time import Date, DateTime, Duration, Time, ZeroDate

from pg2neo.mapping.hashing import canonical, digest, props_hash, props_hash_hex

# ---- the frozen reference (mapping/hashing.py before issue 17; do not edit) ----

_ZERO = dt.timedelta(0)


def _reference_canonical(value: Any) -> str:
    if value is None:
        return "n"
    if isinstance(value, bool):
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        if math.isnan(value):
            return "fnan"
        return f"f{value!r}"
    if isinstance(value, str):
        return f"s{len(value)}:{value}"
    if isinstance(value, bytes | bytearray):
        return "x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return "[" + "\x1f".join(_reference_canonical(v) for v in value) + "]"
    if isinstance(value, Duration):
        return f"D{value.months},{value.days},{value.seconds},{value.nanoseconds}"
    if isinstance(value, DateTime):
        return _reference_datetime(value.to_native(), value.nanosecond)
    if isinstance(value, dt.datetime):
        return _reference_datetime(value, value.microsecond * 1000)
    if isinstance(value, Date):
        return "d" + value.iso_format()
    if isinstance(value, dt.date):
        return "d" + value.isoformat()
    if isinstance(value, Time):
        return _reference_time(value.hour, value.minute, value.second, value.nanosecond, value.utc_offset())
    if isinstance(value, dt.time):
        return _reference_time(value.hour, value.minute, value.second, value.microsecond * 1000, value.utcoffset())
    if isinstance(value, Mapping):
        return "{" + "\x1f".join(f"{len(k)}:{k}={_reference_canonical(value[k])}" for k in sorted(value)) + "}"
    return f"?{type(value).__name__}:{value!r}"


def _reference_datetime(value: dt.datetime, nanos: int) -> str:
    if value.tzinfo is not None and value.utcoffset() is not None:
        utc = value if value.utcoffset() == _ZERO else value.astimezone(dt.UTC)
        return f"Z{utc.replace(tzinfo=None, microsecond=0).isoformat()}.{nanos:09d}"
    return f"L{value.replace(microsecond=0).isoformat()}.{nanos:09d}"


def _reference_time(hour: int, minute: int, second: int, nanos: int, offset: dt.timedelta | None) -> str:
    zone = "" if offset is None else f"@{int(offset.total_seconds())}"
    return f"t{hour:02d}:{minute:02d}:{second:02d}.{nanos:09d}{zone}"


def _reference_digest(parts: Iterable[str]) -> int:
    text = "\x1e".join(parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def _reference_props_hash(props: Mapping[str, Any]) -> int:
    return _reference_digest(
        f"{len(k)}:{k}={_reference_canonical(v)}" for k, v in sorted(props.items()) if v is not None
    )


# ---- values ----


class Colour(enum.IntEnum):
    RED = 1


class Tag(str):
    pass


class Name(str, enum.Enum):  # noqa: UP042 - StrEnum formats as its value, this one does not
    """A str-mixin Enum formats as "Name.TITLE" yet equals "title": as a key it must not take the plain name's text."""

    TITLE = "title"


class Stamp(dt.datetime):
    pass


class NoOffset(dt.tzinfo):
    """A tzinfo that knows no offset: such a datetime hashes as a local one."""

    def utcoffset(self, _: object) -> None:
        return None

    def dst(self, _: object) -> None:
        return None

    def tzname(self, _: object) -> None:
        return None


class Props(UserDict[str, Any]):
    pass


FIXED = st.builds(
    lambda minutes, seconds: dt.timezone(dt.timedelta(minutes=minutes, seconds=seconds)),
    st.integers(-1439, 1439),
    st.sampled_from([0, 0, 0, 30]),
)
ZONES = st.sampled_from([zoneinfo.ZoneInfo(n) for n in ("Europe/Berlin", "America/St_Johns", "Asia/Kathmandu")])
PYTZ_FIXED = st.integers(-1439, 1439).map(pytz.FixedOffset)
TZINFOS = st.one_of(st.just(dt.UTC), FIXED, ZONES, PYTZ_FIXED, st.just(NoOffset()))

NATIVE_DATETIMES = st.one_of(st.datetimes(), st.datetimes(timezones=TZINFOS))
NEO4J_DATETIMES = st.builds(
    lambda native, nanos, tz: DateTime(
        native.year, native.month, native.day, native.hour, native.minute, native.second, nanos, tzinfo=tz
    ),
    st.datetimes(),
    st.one_of(st.integers(0, 999_999_999), st.sampled_from([0, 999, 1000, 999_999_499, 999_999_500, 999_999_999])),
    st.one_of(st.none(), st.just(dt.UTC), FIXED, PYTZ_FIXED, ZONES, st.just(NoOffset())),
)
# pytz zones the way the driver builds a zoned DateTime (`zone.localize(t)`)
NEO4J_ZONED = st.builds(
    lambda native, zone: pytz.timezone(zone).localize(DateTime.from_native(native)),
    st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2100, 1, 1)),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
)
DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(
        lambda sign, digits, exponent: Decimal((sign, digits, exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=30).map(tuple),
        st.integers(-40, 40),
    ),
)
TEXTS = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)  # surrogates too

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**200), 2**200),
    st.floats(),
    st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324, 1e16, 0.1]),
    TEXTS,
    st.binary(max_size=40),
    st.binary(max_size=40).map(bytearray),
    DECIMALS,
    st.uuids(),
    NATIVE_DATETIMES,
    NEO4J_DATETIMES,
    NEO4J_ZONED,
    st.dates(),
    st.dates().map(Date.from_native),
    st.builds(Date, st.integers(1, 9999), st.integers(1, 12), st.integers(-3, -1)),  # a day counted from the end
    st.just(ZeroDate),
    st.times(),
    st.times(timezones=st.one_of(st.just(dt.UTC), FIXED)),
    st.builds(Time, st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999_999_999)),
    st.builds(
        Duration,
        months=st.integers(-1000, 1000),
        days=st.integers(-1000, 1000),
        seconds=st.integers(-(10**6), 10**6),
        nanoseconds=st.integers(0, 999_999_999),
    ),
    # subclasses and odd types take the isinstance chain
    st.just(Colour.RED),
    TEXTS.map(Tag),
    st.datetimes(timezones=st.one_of(st.none(), FIXED)).map(lambda d: Stamp.combine(d.date(), d.timetz())),
    st.complex_numbers(allow_nan=False),
)
KEYS = st.one_of(TEXTS, st.sampled_from(["title", Name.TITLE]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(KEYS, inner, max_size=4),
        st.dictionaries(KEYS, inner, max_size=4).map(OrderedDict),
        st.dictionaries(KEYS, inner, max_size=4).map(Props),
    ),
    max_leaves=12,
)


def outcome(text_of: Any, value: Any) -> tuple[str, Any]:
    """The text, or the type of the exception (out-of-range instants raise OverflowError on both routes)."""
    try:
        return "text", text_of(value)
    except Exception as error:
        return "error", type(error)


@settings(max_examples=2000, deadline=None)
@given(VALUES)
def test_canonical_is_the_original_text(value: Any) -> None:
    assert outcome(canonical, value) == outcome(_reference_canonical, value)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=8))
def test_props_hash_is_the_original_hash(props: dict[str, Any]) -> None:
    expected = outcome(_reference_props_hash, props)
    assert outcome(props_hash, props) == expected
    if expected[0] == "text":
        assert props_hash_hex(props) == f"{expected[1]:016x}"


@given(st.lists(TEXTS, max_size=6))
def test_digest_is_the_original_digest(parts: list[str]) -> None:
    assert digest(parts) == _reference_digest(parts)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=5))),  # its UTC instant is before year 1
        dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        DateTime(1, 1, 1, 0, 0, 0, 5, tzinfo=pytz.FixedOffset(300)),
        dt.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),  # in the spring-forward gap
        dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),
        Date(2024, 2, -1),
        ZeroDate,
    ],
)
def test_edge_values_give_the_original_outcome(value: Any) -> None:
    assert outcome(canonical, value) == outcome(_reference_canonical, value)


def test_a_typical_row_keeps_its_stored_hash() -> None:
    """Hashes computed with the original code: a change here is drift on every node already in Neo4j."""
    at = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    row = {
        "id": 42,
        "title": "Grüße ✓",
        "score": 0.75,
        "price": Decimal("12.50"),
        "created_at": at,
        "due": dt.date(2024, 6, 1),
        "active": True,
        "blob": b"\x00\xff",
        "tags": ["a", "b"],
        "meta": {"k": [1, 2.5, None]},
        "gone": None,
    }
    read_back = {**row, "created_at": DateTime.from_native(at.astimezone(pytz.FixedOffset(-180)))}
    assert props_hash_hex(row) == props_hash_hex(read_back) == f"{_reference_props_hash(row):016x}"
    assert props_hash_hex(row) == "cb3a15885c080361"
