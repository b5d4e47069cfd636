"""The capture objects in PostgreSQL: the `pg2neo` schema and the generated `sync_to_neo4j` triggers.

Each mapped table gets a generated PL/pgSQL function and AFTER INSERT/UPDATE/DELETE row triggers that queue the
row's key (not its image) in `pg2neo.changes`, in the writing transaction: the change is queued if and only if the
write commits. The applier re-reads the rows it is told about, so a queued key always leads to the latest committed
state. An UPDATE that changes no mapped column queues nothing (the trigger's WHEN clause, evaluated without
calling PL/pgSQL). TRUNCATE queues one statement-level event. Writes that pg2neo itself makes (repairs) set
`pg2neo.origin = 'pg2neo'` and are not queued.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from psycopg import sql

from pg2neo.capture.reader import PINNED_SETTINGS
from pg2neo.mapping.plan import Column, JoinTable, Mapping, NodeTable

SCHEMA = "pg2neo"
ORIGIN_SETTING = "pg2neo.origin"
TRIGGER_ROW = "pg2neo_capture"
TRIGGER_UPDATE = "pg2neo_capture_update"
TRIGGER_TRUNCATE = "pg2neo_capture_truncate"

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
"""

APPLY_LOCK_KEY = 0x70_67_32_6E_65_6F  # "pg2neo": one applier at a time, batch by batch


def _ident_suffix(table: str) -> str:
    return hashlib.sha1(table.encode()).hexdigest()[:8]


def function_name(table: str) -> sql.Identifier:
    name = table.split(".", 1)[1]
    return sql.Identifier(SCHEMA, f"capture_{name[:40]}_{_ident_suffix(table)}")


# Key text must not depend on the writer's session (its time zone, DateStyle...): the function runs with the reader's
# settings, so the same key prints the same text in the trigger and in the reader.
_PINNED = sql.SQL(" ").join(
    sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)) for name, value in PINNED_SETTINGS.items()
)


# Key types whose text form no session setting changes. Pinning settings costs every call of the function a save
# and restore of each one (measurable on the write path), so it is done only for keys that need it.
_SETTINGS_FREE = re.compile(r"^(smallint|integer|bigint|text|uuid|boolean|numeric|character varying|character)\b")


def _pinned(key_types: tuple[str, ...], referrers: tuple[Referrer, ...]) -> sql.Composable:
    types = [*key_types, *(t for ref in referrers for t in ref.entry.key_types)]
    return sql.SQL("") if all(_SETTINGS_FREE.match(t) for t in types) else _PINNED


def _key_array(record: str, columns: tuple[str, ...]) -> sql.Composable:
    parts = [sql.SQL("{}.{}::text").format(sql.SQL(record), sql.Identifier(c)) for c in columns]
    return sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(parts))


def _row_of(record: str, columns: list[tuple[str, bool]]) -> sql.Composable:
    parts = [
        sql.SQL("{}.{}").format(sql.SQL(record), sql.Identifier(name))
        if comparable
        else sql.SQL("{}.{}::text").format(sql.SQL(record), sql.Identifier(name))
        for name, comparable in columns
    ]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))


def _watched(entry: NodeTable | JoinTable) -> list[tuple[str, bool]]:
    """Columns whose change must queue an event: the mapped ones, the keys, and relationship columns."""
    watched: dict[str, bool] = {}

    def add(column: Column) -> None:
        watched[column.name] = column.comparable

    for column in entry.columns:
        add(column)
    if isinstance(entry, NodeTable):
        for rel in entry.fk_rels:
            for name in rel.columns:
                watched.setdefault(name, True)
    else:
        for name in (*entry.start.columns, *entry.end.columns, *entry.key_columns):
            watched.setdefault(name, True)
    return list(watched.items())


@dataclass(frozen=True)
class Referrer:
    """Rows of `entry` draw a relationship to a node of another table through non-key columns of that table.

    When that node's key changes, its node is replaced (delete + insert) and the relationship goes with the old
    node; the referring rows did not change, so the target's trigger queues them to be drawn again.
    """

    entry: NodeTable | JoinTable
    columns: tuple[str, ...]  # in the referring table
    ref_columns: tuple[str, ...]  # in the target table


def referrers(mapping: Mapping, table: str) -> tuple[Referrer, ...]:
    found: list[Referrer] = []
    for entry in mapping.entries:
        if isinstance(entry, NodeTable):
            for rel in entry.fk_rels:
                if rel.target_table == table and rel.needs_join:
                    found.append(Referrer(entry, rel.columns, rel.ref_columns))
        else:
            for end in (entry.start, entry.end):
                if end.table == table and end.needs_join:
                    found.append(Referrer(entry, end.columns, end.ref_columns))
    return tuple(found)


def _requeue_referrers(found: tuple[Referrer, ...]) -> list[sql.Composable]:
    statements: list[sql.Composable] = []
    for ref in found:
        match = sql.SQL(" AND ").join(
            sql.SQL("r.{} = NEW.{}").format(sql.Identifier(col), sql.Identifier(target))
            for col, target in zip(ref.columns, ref.ref_columns, strict=True)
        )
        keys = sql.SQL("ARRAY[{}]").format(
            sql.SQL(", ").join(sql.SQL("r.{}::text").format(sql.Identifier(c)) for c in ref.entry.key_columns)
        )
        statements.append(
            sql.SQL(
                "\n        INSERT INTO pg2neo.changes (tbl, op, key) "
                "SELECT {tbl}, 'U', {keys} FROM {src} AS r WHERE {match};"
            ).format(
                tbl=sql.Literal(ref.entry.table),
                keys=keys,
                src=sql.Identifier(ref.entry.schema, ref.entry.name),
                match=match,
            )
        )
    return statements


def table_statements(entry: NodeTable | JoinTable, referrers: tuple[Referrer, ...] = ()) -> list[sql.Composable]:
    """The function and triggers for one mapped table (replacing any earlier version)."""
    key = entry.key_columns
    fn = function_name(entry.table)
    target = sql.Identifier(entry.schema, entry.name)
    tbl = sql.Literal(entry.table)
    insert = sql.SQL("INSERT INTO pg2neo.changes (tbl, op, key) VALUES ")
    # PostgreSQL prepares a trigger's WHEN expression again for every statement, so the "written by pg2neo" test
    # lives in the function (plpgsql keeps its expressions). The "no watched column changed" test stays a WHEN
    # clause: PostgreSQL follows a renamed column there and refuses to drop one, where a function naming the
    # column in text would make the application's UPDATE fail after the rename (a subtransaction to catch that
    # cost as much as the WHEN clause saves).
    watched = _watched(entry)
    body = sql.SQL(
        """
BEGIN
    IF current_setting({origin}, true) = 'pg2neo' THEN
        RETURN NULL;  -- written by pg2neo itself (neo4j-wins repair): not a change to send back
    ELSIF TG_OP = 'INSERT' THEN
        {insert}({tbl}, 'I', {new_key});
    ELSIF TG_OP = 'DELETE' THEN
        {insert}({tbl}, 'D', {old_key});
    ELSIF {old_key} IS DISTINCT FROM {new_key} THEN
        {insert}({tbl}, 'D', {old_key}), ({tbl}, 'I', {new_key});{requeue}
    ELSE
        {insert}({tbl}, 'U', {new_key});
    END IF;
    RETURN NULL;
END
"""
    ).format(
        origin=sql.Literal(ORIGIN_SETTING),
        insert=insert,
        tbl=tbl,
        new_key=_key_array("NEW", key),
        old_key=_key_array("OLD", key),
        requeue=sql.SQL("").join(_requeue_referrers(referrers)),
    )
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
            "SET search_path = pg_catalog, pg_temp {pinned} AS {body}"
        ).format(fn=fn, pinned=_pinned(entry.key_types, referrers), body=sql.Literal(body.as_string())),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_ROW), target),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_UPDATE), target),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_TRUNCATE), target),
        sql.SQL("CREATE TRIGGER {name} AFTER INSERT OR DELETE ON {target} FOR EACH ROW EXECUTE FUNCTION {fn}()").format(
            name=sql.Identifier(TRIGGER_ROW), target=target, fn=fn
        ),
        sql.SQL(
            "CREATE TRIGGER {name} AFTER UPDATE ON {target} FOR EACH ROW WHEN ({old} IS DISTINCT FROM {new}) "
            "EXECUTE FUNCTION {fn}()"
        ).format(
            name=sql.Identifier(TRIGGER_UPDATE),
            target=target,
            old=_row_of("OLD", watched),
            new=_row_of("NEW", watched),
            fn=fn,
        ),
        sql.SQL(
            "CREATE TRIGGER {name} AFTER TRUNCATE ON {target} FOR EACH STATEMENT "
            "EXECUTE FUNCTION pg2neo.capture_truncate()"
        ).format(name=sql.Identifier(TRIGGER_TRUNCATE), target=target),
    ]


TRUNCATE_FUNCTION = """
CREATE OR REPLACE FUNCTION pg2neo.capture_truncate() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('pg2neo.origin', true) IS DISTINCT FROM 'pg2neo' THEN
        INSERT INTO pg2neo.changes (tbl, op, key) VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'T', NULL);
    END IF;
    RETURN NULL;
END $$
"""

INSTALLED_TRIGGERS = """
SELECT n.nspname, c.relname, t.tgname
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname = 'pg2neo' AND NOT t.tgisinternal
"""


def install_statements(mapping: Mapping) -> list[sql.Composable]:
    statements: list[sql.Composable] = [sql.SQL(SCHEMA_SQL), sql.SQL(TRUNCATE_FUNCTION)]
    for entry in mapping.entries:
        statements += table_statements(entry, referrers(mapping, entry.table))
    return statements


def drop_trigger_statements(installed: list[tuple[str, ...]]) -> list[sql.Composed]:
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), sql.Identifier(schema, table))
        for schema, table, name in installed
    ]
