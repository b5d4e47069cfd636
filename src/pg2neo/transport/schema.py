"""The pg2neo schema in PostgreSQL: its DDL, the grants a service role needs on it, the apply lock and the
registration of pg2neo's own writes.

The tables (`changes`, `snapshot_progress`, `dead_letters`, `audit`, `state`, `own_writes`, `truncating`) and the
`epoch` sequence are created here; the queries on them live beside this module (queue.py, dead_letters.py, audit.py,
progress.py, state.py). The capture triggers that fill `pg2neo.changes` are generated in capture/triggers.py, which
owns the schema's name (`SCHEMA`) because it sits below this package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from pg2neo.capture.triggers import SCHEMA
from pg2neo.mapping.plan import Mapping

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS pg2neo;

CREATE TABLE IF NOT EXISTS pg2neo.changes (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tbl         text NOT NULL,
    op          "char" NOT NULL,           -- I, U, D, T(runcate)
    key         text[],                    -- the node or join-row key, as text; NULL for T
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE pg2neo.changes SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- Taken under the apply lock by every batch: stamped on what it writes, so an older read never
-- overwrites a newer one in Neo4j (the per-row version pg2neo keeps itself).
CREATE SEQUENCE IF NOT EXISTS pg2neo.epoch;

CREATE TABLE IF NOT EXISTS pg2neo.snapshot_progress (
    tbl         text PRIMARY KEY,
    last_key    text[],
    rows_done   bigint NOT NULL DEFAULT 0,
    done        boolean NOT NULL DEFAULT false,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE TABLE IF NOT EXISTS pg2neo.dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tbl             text NOT NULL,
    key             text[],
    op              "char" NOT NULL,
    error_class     text NOT NULL,
    message         text NOT NULL,
    payload         jsonb,
    attempts        integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tbl, key)
);

CREATE TABLE IF NOT EXISTS pg2neo.audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL,             -- changes, snapshot, truncate, repair
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    first_seq   bigint,
    last_seq    bigint,
    events      integer NOT NULL,
    counts      jsonb NOT NULL,
    duration_ms double precision NOT NULL,
    attempts    integer NOT NULL DEFAULT 1,
    outcome     text NOT NULL,
    epoch       bigint
);
CREATE INDEX IF NOT EXISTS audit_finished_at ON pg2neo.audit (finished_at);

CREATE TABLE IF NOT EXISTS pg2neo.state (
    name  text PRIMARY KEY,
    value jsonb NOT NULL
);

-- Transactions of pg2neo's own writes (repairs), whose changes the capture must not queue. Only pg2neo's roles
-- may insert; the row is removed at commit by a deferred trigger, so the table stays empty between repairs.
CREATE TABLE IF NOT EXISTS pg2neo.own_writes (
    txid xid8 PRIMARY KEY
);

CREATE OR REPLACE FUNCTION pg2neo.forget_own_write() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM pg2neo.own_writes WHERE txid = NEW.txid;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS forget_at_commit ON pg2neo.own_writes;
CREATE CONSTRAINT TRIGGER forget_at_commit AFTER INSERT ON pg2neo.own_writes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg2neo.forget_own_write();
ALTER TABLE pg2neo.own_writes ENABLE ALWAYS TRIGGER forget_at_commit;

-- Tables being truncated whole by the current statement (written only by the capture functions): a partition whose
-- ancestor is listed here queues nothing, the ancestor's own TRUNCATE event covers its rows.
CREATE TABLE IF NOT EXISTS pg2neo.truncating (
    txid  xid8 NOT NULL,
    relid oid NOT NULL,
    PRIMARY KEY (txid, relid)
);
"""

# The tables a service role may not write: only the SECURITY DEFINER functions do (own_writes: INSERT only).
_FUNCTION_ONLY_TABLES = ("own_writes", "truncating")

APPLY_LOCK_KEY = 0x70_67_32_6E_65_6F  # "pg2neo": one applier at a time, batch by batch


def schema_statements() -> list[sql.Composable]:
    """The schema's objects, created if missing (re-runnable; `init` runs them before the capture triggers)."""
    return [sql.SQL(SCHEMA_SQL)]


def drop_schema(conn: psycopg.Connection[Any]) -> None:
    """Drop the pg2neo schema and everything in it (queue, dead letters, audit, state, capture functions)."""
    conn.execute("DROP SCHEMA IF EXISTS pg2neo CASCADE")


def take_apply_lock(conn: psycopg.Connection[Any]) -> None:
    """Wait for the apply lock as a session lock on `conn` (held until `release_apply_lock`)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (APPLY_LOCK_KEY,))


def release_apply_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (APPLY_LOCK_KEY,))


@contextmanager
def apply_lock(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Hold the apply lock (a session advisory lock on `conn`) for the block; released unless `conn` is lost."""
    take_apply_lock(conn)
    try:
        yield conn
    finally:
        if not conn.closed and not conn.broken:
            release_apply_lock(conn)


def service_grant_statements(role: str, mapping: Mapping) -> list[sql.Composable]:
    """What a role needs to run `pg2neo run`, `snapshot`, `verify`, `status`, `dlq`, `reconcile --policy pg-wins`.

    Read access to the mapped tables; read/write on pg2neo's own tables except the two only the capture functions
    write; `own_writes` INSERT for neo4j-wins repairs (which also need INSERT/UPDATE/DELETE on the mapped tables:
    not granted here, see docs/operations.md). No privilege to create anything.
    """
    who = sql.Identifier(role)
    function_only = sql.SQL(", ").join(sql.Identifier(SCHEMA, t) for t in _FUNCTION_ONLY_TABLES)
    statements: list[sql.Composable] = [
        sql.SQL("GRANT USAGE ON SCHEMA pg2neo TO {}").format(who),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pg2neo TO {}").format(who),
        sql.SQL("REVOKE ALL ON {} FROM {}").format(function_only, who),
        sql.SQL("GRANT INSERT ON pg2neo.own_writes TO {}").format(who),
        sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA pg2neo TO {}").format(who),
        # Tables a later `pg2neo init` (or the installing role) adds to the schema are granted as they are made.
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA pg2neo GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
        ).format(who),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA pg2neo GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}").format(who),
    ]
    for schema in sorted({entry.schema for entry in mapping.entries}):
        statements.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who))
    tables = sql.SQL(", ").join(sql.Identifier(entry.schema, entry.name) for entry in mapping.entries)
    statements.append(sql.SQL("GRANT SELECT ON {} TO {}").format(tables, who))
    return statements


def mark_own_write(conn: psycopg.Connection[Any]) -> None:
    """Make the rest of the current transaction a write by pg2neo itself: the capture triggers do not queue it.

    Call inside a transaction, before the writes. Needs INSERT on `pg2neo.own_writes` (the installing role and the
    service roles `init` granted); the setting alone, which any role can set, skips nothing.
    """
    conn.execute("SET LOCAL pg2neo.origin = 'pg2neo'")
    conn.execute("INSERT INTO pg2neo.own_writes (txid) VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING")
