"""The PostgreSQL session settings that decide how a value prints as text, pinned in one place.

A key travels as text: the capture trigger prints it in the writer's session, and the applier, strict mode and
verify read rows back by it. Under a different `DateStyle`, `IntervalStyle`, `TimeZone`, `extra_float_digits` or
`bytea_output` the same key would print differently and a row would be taken for a delete, so every one of those
sessions pins the same values: the trigger functions with `SET` clauses (capture/triggers.py), pg2neo's own
connections with `prepare_connection`, and a connection that is the application's (strict mode) with
`PIN_FOR_TRANSACTION`, for one transaction.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.datetime import DateLoader, TimeLoader, TimestampLoader, TimestamptzLoader, TimetzLoader

from pg2neo.mapping.convert import OutOfRange


def _lenient(loader: type[Any]) -> type[Any]:
    class Lenient(loader):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            try:
                return super().load(data)
            except psycopg.DataError:
                return OutOfRange(bytes(data).decode())

    return Lenient


LENIENT_LOADERS = {
    "date": _lenient(DateLoader),
    "timestamp": _lenient(TimestampLoader),
    "timestamptz": _lenient(TimestamptzLoader),
    "time": _lenient(TimeLoader),  # 24:00:00 is a PostgreSQL time, not a Python one
    "timetz": _lenient(TimetzLoader),
}


# The settings that decide how values print as text. Key text is compared between the capture trigger (which runs in
# the writer's session) and this reader, so both pin the same values: see capture/triggers.py.
PINNED_SETTINGS = {
    "timezone": "UTC",
    "datestyle": "ISO, YMD",
    "intervalstyle": "iso_8601",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}
PINNED_SETTINGS_SQL = "; ".join(f"SET {name} = '{value}'" for name, value in PINNED_SETTINGS.items())
# The same for one transaction of a connection that is not pg2neo's own (strict mode reads in the application's):
# `set_config(name, value, true)` is `SET LOCAL` as expressions, which can share one statement with other work.
PIN_FOR_TRANSACTION = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in PINNED_SETTINGS.items())


def prepare_connection(conn: psycopg.Connection[Any]) -> None:
    """Session settings and loaders every reading connection needs (exact intervals, out-of-range dates)."""
    conn.execute(PINNED_SETTINGS_SQL)
    for name, loader in LENIENT_LOADERS.items():
        conn.adapters.register_loader(name, loader)
    if not conn.autocommit:
        conn.commit()
