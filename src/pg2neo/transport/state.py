"""`pg2neo.state`: named JSON values pg2neo keeps about itself.

Rows: `mapping` (the installed mapping's fingerprint), `service_roles` (granted again by every `init`),
`service:<host>:<pid>` (each service's heartbeat), `drift` (the last full and recent checks) and `schema_changes`
(the last schema change a service stopped on).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import psycopg

MAPPING = "mapping"
SERVICE_ROLES = "service_roles"
DRIFT = "drift"
SCHEMA_CHANGES = "schema_changes"


class ServiceRow(NamedTuple):
    """A service's heartbeat row and its age in seconds (PostgreSQL's clock)."""

    name: str
    value: dict[str, Any]
    age_seconds: float


class Timed(NamedTuple):
    """A state value and PostgreSQL's clock when it was read (unix time)."""

    value: dict[str, Any]
    now: float


def read_state(conn: psycopg.Connection[Any], name: str) -> Any | None:
    """The value of row `name`, or None when there is none."""
    row = conn.execute("SELECT value FROM pg2neo.state WHERE name = %s", (name,)).fetchone()
    return None if row is None else row[0]


def write_state(conn: psycopg.Connection[Any], name: str, value: Any) -> None:
    """Set row `name` to `value` (JSON-encoded here)."""
    conn.execute(
        "INSERT INTO pg2neo.state (name, value) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        (name, json.dumps(value)),
    )


def delete_state(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute("DELETE FROM pg2neo.state WHERE name = %s", (name,))


def write_heartbeat(conn: psycopg.Connection[Any], name: str, value: dict[str, Any]) -> None:
    """Set a service's row to `value` plus `heartbeat`: PostgreSQL's clock now."""
    conn.execute(
        "INSERT INTO pg2neo.state (name, value) VALUES (%s, %s::jsonb || jsonb_build_object("
        "'heartbeat', extract(epoch FROM clock_timestamp()))) "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        (name, json.dumps(value)),
    )


def forget_services(conn: psycopg.Connection[Any], older_than_seconds: float) -> None:
    """Remove service rows whose heartbeat is older than `older_than_seconds`."""
    conn.execute(
        "DELETE FROM pg2neo.state WHERE name LIKE 'service:%%' AND "
        "extract(epoch FROM clock_timestamp()) - (value->>'heartbeat')::float8 > %s",
        (older_than_seconds,),
    )


def silent_services(
    conn: psycopg.Connection[Any], host: str, besides: str, older_than_seconds: float
) -> list[tuple[str, int | None]]:
    """Name and pid of this host's services, other than `besides`, neither gone nor stopped, whose heartbeat is older
    than `older_than_seconds`."""
    rows = conn.execute(
        "SELECT name, (value->>'pid')::int FROM pg2neo.state WHERE name LIKE %s AND name <> %s "
        "AND coalesce(value->>'state', '') NOT IN ('gone', 'stopped') "
        "AND extract(epoch FROM clock_timestamp()) - (value->>'heartbeat')::float8 > %s",
        (f"service:{host}:%", besides, older_than_seconds),
    ).fetchall()
    return [(str(name), None if pid is None else int(pid)) for name, pid in rows]


def mark_service_gone(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(
        "UPDATE pg2neo.state SET value = value || jsonb_build_object('state', 'gone', 'detail', "
        "'the process is gone (killed?); a new service started on this host') WHERE name = %s",
        (name,),
    )


def services(conn: psycopg.Connection[Any]) -> list[ServiceRow]:
    """Every service row, by name."""
    rows = conn.execute(
        "SELECT name, value, extract(epoch FROM clock_timestamp()) - (value->>'heartbeat')::float8 "
        "FROM pg2neo.state WHERE name LIKE 'service:%%' ORDER BY name"
    ).fetchall()
    return [ServiceRow(str(name), value, float(age)) for name, value, age in rows]


def read_drift(conn: psycopg.Connection[Any]) -> Timed | None:
    """The `drift` row and PostgreSQL's clock now."""
    row = conn.execute(
        "SELECT value, extract(epoch FROM clock_timestamp()) FROM pg2neo.state WHERE name = 'drift'"
    ).fetchone()
    return None if row is None else Timed(row[0], float(row[1]))


def record_drift(conn: psycopg.Connection[Any], mode: str, value: dict[str, Any]) -> None:
    """Keep one check's result under its mode (`full`, `recent`) in the `drift` row, stamped with PostgreSQL's clock;
    a row in the older one-check form is replaced."""
    conn.execute(
        "INSERT INTO pg2neo.state AS s (name, value) VALUES ('drift', jsonb_build_object(%s::text, "
        "%s::jsonb || jsonb_build_object('at', extract(epoch FROM clock_timestamp())))) "
        "ON CONFLICT (name) DO UPDATE SET value = "
        "(CASE WHEN s.value ? 'mode' THEN '{}'::jsonb ELSE s.value END) || EXCLUDED.value",
        (mode, json.dumps(value)),
    )
