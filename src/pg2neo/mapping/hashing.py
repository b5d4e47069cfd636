"""Content hashes of mapped values, computed identically from PostgreSQL rows (after `convert`) and Neo4j reads.

Both sides are reduced to one canonical text per value, tagged with its kind, so that the Python values psycopg
hands over (then converted for apply) and the values the Neo4j driver reads back hash the same when, and only
when, Neo4j stores the same property. Pure: no server is touched here, and nothing from the other stages is
imported (the apply stage stamps the hash on every node; a map read back from Neo4j is hashed once pg2neo's own
properties are left out, with `apply.cypher.graph_props`).

The hash is stamped on every node the apply stage writes and recomputed for every row and node verify reads, so
it is on the hot path of both. `_text_by_kind` (an `isinstance` chain) defines the texts; values of the common
exact types take a faster route to the same texts through `_TEXT_OF`, a table keyed by `type(value)`.
Stored hashes depend on every byte: tests/unit/test_hashing_fast.py holds both routes to the original code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from neo4j.time import Date, DateTime, Duration, Time

MASK = (1 << 64) - 1
_ZERO = dt.timedelta(0)


def canonical(value: Any) -> str:
    """One tagged text per value; equal Neo4j property values (whatever Python type carries them) give equal texts."""
    return _TEXT_OF.get(type(value), _text_by_kind)(value)


def _text_by_kind(value: Any) -> str:
    """The definition of the texts; also the route of subclasses (which may format themselves differently)."""
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
        # Length-prefixed, so that no text can imitate the separators of lists, maps and property sets.
        return f"s{len(value)}:{value}"
    if isinstance(value, bytes | bytearray):
        return "x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        # This includes neo4j.time.Duration, a tuple (months, days, seconds, nanoseconds).
        return "[" + "\x1f".join(canonical(v) for v in value) + "]"
    if isinstance(value, DateTime):
        return _datetime(value.to_native(), value.nanosecond)
    if isinstance(value, dt.datetime):
        return _datetime(value, value.microsecond * 1000)
    if isinstance(value, Date):
        return "d" + value.iso_format()
    if isinstance(value, dt.date):
        return "d" + value.isoformat()
    if isinstance(value, Time):
        return _time(value.hour, value.minute, value.second, value.nanosecond, value.utc_offset())
    if isinstance(value, dt.time):
        return _time(value.hour, value.minute, value.second, value.microsecond * 1000, value.utcoffset())
    if isinstance(value, Mapping):
        return "{" + "\x1f".join(f"{len(k)}:{k}={canonical(value[k])}" for k in sorted(value)) + "}"
    return _opaque(value)


def _datetime(value: dt.datetime, nanos: int) -> str:
    if value.tzinfo is not None and value.utcoffset() is not None:
        # Neo4j keeps the instant (and its offset); PostgreSQL timestamptz is an instant: compare instants.
        utc = value if value.utcoffset() == _ZERO else value.astimezone(dt.UTC)
        return f"Z{utc.replace(tzinfo=None, microsecond=0).isoformat()}.{nanos:09d}"
    return f"L{value.replace(microsecond=0).isoformat()}.{nanos:09d}"


def _time(hour: int, minute: int, second: int, nanos: int, offset: dt.timedelta | None) -> str:
    zone = "" if offset is None else f"@{int(offset.total_seconds())}"
    return f"t{hour:02d}:{minute:02d}:{second:02d}.{nanos:09d}{zone}"


def _opaque(value: Any) -> str:
    return f"?{type(value).__name__}:{value!r}"


# The fast route: one function per exact type, each giving `_text_by_kind`'s text for that type.


def _float(value: float) -> str:
    return f"f{value!r}"  # repr writes every NaN as "nan": `_text_by_kind`'s "fnan"


def _str(value: str) -> str:
    return f"s{len(value)}:{value}"


def _list(value: list[Any] | tuple[Any, ...]) -> str:
    text_of = _TEXT_OF.get  # one look-up per list, not per element
    return "[" + "\x1f".join([text_of(type(v), _text_by_kind)(v) for v in value]) + "]"


def _dict(value: dict[str, Any]) -> str:
    return "{" + "\x1f".join(_entry_texts(value.items())) + "}"


# `_datetime`'s text, formatted from the fields: several times cheaper than isoformat of a naive copy.
_INSTANT = "Z%04d-%02d-%02dT%02d:%02d:%02d.%09d"
_LOCAL = "L%04d-%02d-%02dT%02d:%02d:%02d.%09d"


def _fields_datetime(value: dt.datetime, nanos: int) -> str:
    offset = value.utcoffset()
    if offset is None:
        template = _LOCAL
    else:
        template = _INSTANT
        if offset:
            value -= offset  # the UTC wall clock, as astimezone(UTC) computes it
    return template % (value.year, value.month, value.day, value.hour, value.minute, value.second, nanos)


def _native_datetime(value: dt.datetime) -> str:
    return _fields_datetime(value, value.microsecond * 1000)


def _neo4j_datetime(value: DateTime) -> str:
    year, month, day = value.year_month_day
    hour, minute, second, nanos = value.hour_minute_second_nanosecond
    # The datetime `value.to_native()` builds (microseconds truncated), without its property look-ups.
    native = dt.datetime(year, month, day, hour, minute, second, nanos // 1000, value.tzinfo)
    return _fields_datetime(native, nanos)


def _neo4j_date(value: Date) -> str:
    ordinal = value.to_ordinal()
    if ordinal == 0:  # neo4j.time.ZeroDate, which no Python date equals
        return "d" + value.iso_format()
    # iso_format's text, from the C date: iso_format walks several Python properties
    return "d" + dt.date.fromordinal(ordinal).isoformat()


class _KeyTexts(dict[str, str]):
    """The `<length>:<key>=` prefix of each map key and property name, made once: rows repeat a few names."""

    def __missing__(self, key: str) -> str:
        if len(self) >= 10_000:  # bounded, whatever keys the graph holds
            self.clear()
        text = self[key] = f"{len(key)}:{key}="
        return text


_KEY_TEXTS = _KeyTexts()


def _entry_texts(entries: Iterable[tuple[str, Any]]) -> list[str]:
    """`<length>:<key>=<text>` of each entry, in key order (a map's keys are unique: no value is compared)."""
    key_texts = _KEY_TEXTS
    text_of = _TEXT_OF.get
    return [
        # a str subclass (a str-mixin Enum, say) may format itself otherwise, and equals the plain key
        (key_texts[k] if type(k) is str else f"{len(k)}:{k}=") + text_of(type(v), _text_by_kind)(v)
        for k, v in sorted(entries)
    ]


_TEXT_OF: dict[type, Callable[[Any], str]] = {
    type(None): lambda _: "n",
    bool: lambda value: "b1" if value else "b0",
    int: lambda value: f"i{value}",
    float: _float,
    str: _str,
    bytes: lambda value: "x" + value.hex(),
    bytearray: lambda value: "x" + value.hex(),
    list: _list,
    tuple: _list,
    Duration: _list,  # a tuple (months, days, seconds, nanoseconds), so `_text_by_kind` hashes it as one
    dict: _dict,
    dt.datetime: _native_datetime,
    DateTime: _neo4j_datetime,
    dt.date: lambda value: "d" + value.isoformat(),
    Date: _neo4j_date,
    Decimal: _opaque,
    uuid.UUID: _opaque,
}


def _digest_bytes(parts: Iterable[str]) -> bytes:
    text = "\x1e".join(parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def digest(parts: Iterable[str]) -> int:
    return int.from_bytes(_digest_bytes(parts), "big")


def _property_texts(props: Mapping[str, Any]) -> list[str]:
    return _entry_texts([(k, v) for k, v in props.items() if v is not None])


def props_hash(props: Mapping[str, Any]) -> int:
    """The content hash of a map of mapped properties (NULL and absent alike)."""
    return int.from_bytes(_digest_bytes(_property_texts(props)), "big")


def props_hash_hex(props: Mapping[str, Any]) -> str:
    """The hash stamped on each node by the apply stage (`apply.cypher.HASH_PROP`)."""
    return _digest_bytes(_property_texts(props)).hex()


def key_text(value: Any) -> str:
    """A key value as PostgreSQL's `::text` writes it (the form the capture triggers queue)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, DateTime | Date):
        return value.iso_format()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    return str(value)


def bucket_of(identity: tuple[str, ...], buckets: int) -> int:
    return digest(identity) % buckets
