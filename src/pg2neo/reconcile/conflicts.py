"""The `pg2neo.conflicts` table: drift items the manual policy leaves to a person (`pg2neo conflicts ...`).

Created here on first use (CREATE TABLE IF NOT EXISTS), not by `pg2neo init`. One open row per scope and
identity; `resolve` (in repair.py) rewrites one side from the other and stamps `resolved_at` and `resolution`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

if TYPE_CHECKING:
    from pg2neo.reconcile.repair import Conflict

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


def record_conflicts(conn: psycopg.Connection[Any], conflicts: list[Conflict]) -> int:
    ensure_conflicts_table(conn)
    recorded = 0
    for c in conflicts:
        cur = conn.execute(
            "INSERT INTO pg2neo.conflicts (scope, kind, identity, pg_row, neo4j_props) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (scope, identity) WHERE resolved_at IS NULL DO UPDATE SET kind = EXCLUDED.kind, "
            "pg_row = EXCLUDED.pg_row, neo4j_props = EXCLUDED.neo4j_props, detected_at = now()",
            (
                c.drift.scope,
                c.drift.kind,
                list(c.drift.identity),
                Jsonb(_jsonable(c.pg_row)),
                Jsonb(_jsonable(c.neo4j_props)),
            ),
        )
        recorded += cur.rowcount
    return recorded


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
