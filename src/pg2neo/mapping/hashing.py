"""Content hashes of mapped values, computed identically from PostgreSQL rows (after `convert`) and Neo4j reads.

Both sides are reduced to one canonical text per value, tagged with its kind, so that the Python values psycopg
hands over (then converted for apply) and the values the Neo4j driver reads back hash the same when, and only
when, Neo4j stores the same property. Pure: no server is touched here, and nothing from the other stages is
imported (the apply stage stamps the hash on every node; a map read back from Neo4j is hashed once pg2neo's own
properties are left out, with `apply.cypher.graph_props`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from neo4j.time import Date, DateTime, Duration, Time

MASK = (1 << 64) - 1
_ZERO = dt.timedelta(0)


def _offset(value: dt.datetime | dt.time) -> str:
    offset = value.utcoffset()
    return "" if offset is None else f"@{int(offset.total_seconds())}"


def canonical(value: Any) -> str:
    """One tagged text per value; equal Neo4j property values (whatever Python type carries them) give equal texts."""
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
        return "[" + "\x1f".join(canonical(v) for v in value) + "]"
    if isinstance(value, Duration):
        return f"D{value.months},{value.days},{value.seconds},{value.nanoseconds}"
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
    return f"?{type(value).__name__}:{value!r}"


def _datetime(value: dt.datetime, nanos: int) -> str:
    if value.tzinfo is not None and value.utcoffset() is not None:
        # Neo4j keeps the instant (and its offset); PostgreSQL timestamptz is an instant: compare instants.
        utc = value if value.utcoffset() == _ZERO else value.astimezone(dt.UTC)
        return f"Z{utc.replace(tzinfo=None, microsecond=0).isoformat()}.{nanos:09d}"
    return f"L{value.replace(microsecond=0).isoformat()}.{nanos:09d}"


def _time(hour: int, minute: int, second: int, nanos: int, offset: dt.timedelta | None) -> str:
    zone = "" if offset is None else f"@{int(offset.total_seconds())}"
    return f"t{hour:02d}:{minute:02d}:{second:02d}.{nanos:09d}{zone}"


def digest(parts: Iterable[str]) -> int:
    text = "\x1e".join(parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def props_hash(props: Mapping[str, Any]) -> int:
    """The content hash of a map of mapped properties (NULL and absent alike)."""
    return digest(f"{len(k)}:{k}={canonical(v)}" for k, v in sorted(props.items()) if v is not None)


def props_hash_hex(props: Mapping[str, Any]) -> str:
    """The hash stamped on each node by the apply stage (`apply.cypher.HASH_PROP`)."""
    return f"{props_hash(props):016x}"


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
