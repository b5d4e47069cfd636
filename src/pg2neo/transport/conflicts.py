"""The `pg2neo.conflicts` table: drift items the manual policy leaves to a person (`pg2neo conflicts ...`).

Its DDL and every query on it. `pg2neo init` creates it (`CONFLICTS_DDL`); `ensure_conflicts_table` creates it on
first use where init has not. One open row per scope and identity; a resolution stamps `resolved_at` and
`resolution`, and `record_resolution` also writes it into the audit trail (`pg2neo.audit`, kind
`conflict_resolved`).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pg2neo.errors import ReconcileError

AUDIT_KIND = "conflict_resolved"

CONFLICTS_DDL = """
CREATE TABLE IF NOT EXISTS pg2neo.conflicts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope        text NOT NULL,
    kind         text NOT NULL,
    identity     text[] NOT NULL,
    pg_row       jsonb,
    neo4j_props  jsonb,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    resolution   text
);
CREATE UNIQUE INDEX IF NOT EXISTS conflicts_open ON pg2neo.conflicts (scope, identity) WHERE resolved_at IS NULL;
"""


def ensure_conflicts_table(conn: psycopg.Connection[Any]) -> None:
    # `init` creates it; CREATE ... IF NOT EXISTS would still need CREATE on the schema, which a least-privilege
    # service role does not have
    row = conn.execute("SELECT to_regclass('pg2neo.conflicts') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        conn.execute(CONFLICTS_DDL)


def _jsonable(props: dict[str, Any] | None) -> Any:
    if props is None:
        return None
    return json.loads(json.dumps(props, default=str))


def record_conflict(
    conn: psycopg.Connection[Any],
    scope: str,
    kind: str,
    identity: tuple[str, ...],
    pg_row: dict[str, Any] | None,
    neo4j_props: dict[str, Any] | None,
) -> int:
    """Open (or refresh the open) row for this scope and identity; returns the rows written (0 or 1)."""
    cur = conn.execute(
        "INSERT INTO pg2neo.conflicts (scope, kind, identity, pg_row, neo4j_props) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (scope, identity) WHERE resolved_at IS NULL DO UPDATE SET kind = EXCLUDED.kind, "
        "pg_row = EXCLUDED.pg_row, neo4j_props = EXCLUDED.neo4j_props, detected_at = now()",
        (scope, kind, list(identity), Jsonb(_jsonable(pg_row)), Jsonb(_jsonable(neo4j_props))),
    )
    return cur.rowcount


def list_conflicts(conn: psycopg.Connection[Any], include_resolved: bool = False) -> list[dict[str, Any]]:
    ensure_conflicts_table(conn)
    cur = conn.execute(
        "SELECT id, scope, kind, identity, pg_row, neo4j_props, detected_at, resolved_at, resolution "
        "FROM pg2neo.conflicts WHERE %s OR resolved_at IS NULL ORDER BY id",
        (include_resolved,),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def get_conflict(conn: psycopg.Connection[Any], conflict_id: int) -> dict[str, Any] | None:
    return next((c for c in list_conflicts(conn, True) if c["id"] == conflict_id), None)


def mark_resolved(conn: psycopg.Connection[Any], conflict_id: int, take: str) -> None:
    conn.execute("UPDATE pg2neo.conflicts SET resolved_at = now(), resolution = %s WHERE id = %s", (take, conflict_id))


def record_resolution(
    conn: psycopg.Connection[Any], conflict_id: int, take: str, by: str, duration_seconds: float = 0.0
) -> None:
    """Mark the conflict resolved (if `mark_resolved` has not yet) and add its row to the audit trail, in one
    transaction: the audit row names the conflict, its scope and identity, the side taken and who took it."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE pg2neo.conflicts SET resolved_at = coalesce(resolved_at, now()), resolution = %s WHERE id = %s "
            "RETURNING scope, kind, identity",
            (take, conflict_id),
        ).fetchone()
        if row is None:
            raise ReconcileError(f"no conflict with id {conflict_id}")
        counts = {"conflict_id": conflict_id, "scope": row[0], "kind": row[1], "identity": row[2], "take": take}
        conn.execute(
            "INSERT INTO pg2neo.audit (kind, started_at, events, counts, duration_ms, outcome) "
            "VALUES (%s, clock_timestamp() - make_interval(secs => %s), 1, %s, %s, %s)",
            (AUDIT_KIND, duration_seconds, Jsonb({**counts, "by": by}), duration_seconds * 1000, f"took {take}"),
        )
