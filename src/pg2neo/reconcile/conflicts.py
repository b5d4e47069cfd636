"""The `pg2neo.conflicts` table: drift items the manual policy leaves to a person (`pg2neo conflicts ...`).

Created here on first use (CREATE TABLE IF NOT EXISTS), not by `pg2neo init`. One open row per scope and
identity; `resolve_conflict` (in repair.py) rewrites one side from the other and stamps `resolved_at` and
`resolution`. `resolve_and_record` is how a person resolves one (`pg2neo conflicts resolve`, the web console): it
also writes the resolution into the audit trail (`pg2neo.audit`, kind `conflict_resolved`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from pg2neo.errors import ReconcileError

if TYPE_CHECKING:
    from neo4j import Driver

    from pg2neo.mapping.plan import Mapping
    from pg2neo.reconcile.repair import Conflict

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


def record_resolution(
    conn: psycopg.Connection[Any], conflict_id: int, take: str, by: str, duration_seconds: float = 0.0
) -> None:
    """Mark the conflict resolved (if `resolve_conflict` has not yet) and add its row to the audit trail, in one
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


def resolve_and_record(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    conflict_id: int,
    take: str,
    drain: Callable[[], None],
    database: str = "neo4j",
    by: str = "cli",
) -> Conflict:
    """Settle one conflict with the chosen side's current state (`repair.resolve_conflict`), then record the
    resolution in the audit trail (`record_resolution`). `by` says who resolved it: "cli", "console"."""
    from pg2neo.reconcile.repair import resolve_conflict  # repair imports this module

    started = time.monotonic()
    conflict = resolve_conflict(pg_dsn, driver, mapping, conflict_id, take, drain, database)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        record_resolution(conn, conflict_id, take, by, time.monotonic() - started)
    return conflict
