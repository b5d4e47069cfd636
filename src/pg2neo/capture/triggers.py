"""The capture triggers in PostgreSQL: the generated `sync_to_neo4j` functions and the triggers that call them.

The `pg2neo` schema they write into (its tables, the apply lock, own-write registration) belongs to
transport/schema.py; this module only names the schema (`SCHEMA`), so that both can use it without importing upward.

Each mapped table gets a generated PL/pgSQL function and AFTER INSERT/UPDATE/DELETE row triggers that queue the
row's key (not its image) in `pg2neo.changes`, in the writing transaction: the change is queued if and only if the
write commits. The applier re-reads the rows it is told about, so a queued key always leads to the latest committed
state. An UPDATE that changes no mapped column queues nothing (the trigger's WHEN clause, evaluated without
calling PL/pgSQL). TRUNCATE queues one statement-level event; TRUNCATE of one partition of a mapped partitioned
table (which does not fire the parent's trigger) queues a delete for each of its rows, read just before they go.

Who may do what (docs/operations.md, "Privileges and roles"): the capture functions are SECURITY DEFINER, owned by
the role that ran `pg2neo init`, with a pinned search_path, so the application's roles need no privilege on the
`pg2neo` schema and cannot queue an event themselves. Every trigger is enabled ALWAYS, so sessions with
`session_replication_role = replica` (pg_restore, logical-replication apply workers) are captured too.

Writes that pg2neo itself makes (neo4j-wins repairs) are not queued: they set `pg2neo.origin = 'pg2neo'` *and*
register their transaction in `pg2neo.own_writes`, which only pg2neo's roles may write (`mark_own_write`). The setting
alone skips nothing, and normal writes, which do not set it, never read that table.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from psycopg import sql

from pg2neo.capture.session import PINNED_SETTINGS
from pg2neo.mapping.plan import Column, JoinTable, Mapping, NodeTable

SCHEMA = "pg2neo"
ORIGIN_SETTING = "pg2neo.origin"
TRIGGER_ROW = "pg2neo_capture"
TRIGGER_UPDATE = "pg2neo_capture_update"
TRIGGER_TRUNCATE = "pg2neo_capture_truncate"
# On a mapped partitioned table: marks the statement that truncates it whole, so its partitions queue nothing.
TRIGGER_TRUNCATE_BEGIN = "pg2neo_capture_truncate_begin"
# On each partition of a mapped table: TRIGGER_TRUNCATE (before: queue a delete per row) and this one (after).
TRIGGER_TRUNCATE_END = "pg2neo_capture_truncate_end"

# Checked only when the setting is set (a plain `IF` on current_setting is evaluated without the executor), so
# writes that do not set it never read `pg2neo.own_writes`.
SKIP_OWN_WRITE = """
    IF current_setting('pg2neo.origin', true) = 'pg2neo' THEN
        IF EXISTS (SELECT 1 FROM pg2neo.own_writes WHERE txid = pg_current_xact_id()) THEN
            RETURN NULL;  -- written by pg2neo itself (neo4j-wins repair): not a change to send back
        END IF;
    END IF;"""


def _ident_suffix(table: str) -> str:
    return hashlib.sha1(table.encode()).hexdigest()[:8]


def function_name(table: str) -> sql.Identifier:
    """The row capture function of a mapped table: `pg2neo.sync_to_neo4j_<table>_<hash8>` (the specification's name)."""
    name = table.split(".", 1)[1]
    return sql.Identifier(SCHEMA, f"sync_to_neo4j_{name[:40]}_{_ident_suffix(table)}")


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
    # lives in the function (plpgsql keeps its expressions). The "no watched column changed" test stays in the
    # trigger (see _update_trigger): PostgreSQL follows a renamed column there and refuses to drop one, where a
    # function naming the column in text would make the application's UPDATE fail after the rename (a
    # subtransaction to catch that cost as much as the WHEN clause saves).
    watched = _watched(entry)
    body = sql.SQL(
        """
BEGIN{skip_own}
    IF TG_OP = 'INSERT' THEN
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
        skip_own=sql.SQL(SKIP_OWN_WRITE),
        insert=insert,
        tbl=tbl,
        new_key=_key_array("NEW", key),
        old_key=_key_array("OLD", key),
        requeue=sql.SQL("").join(_requeue_referrers(referrers)),
    )
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
            "SECURITY DEFINER SET search_path = pg_catalog, pg_temp {pinned} AS {body}"
        ).format(fn=fn, pinned=_pinned(entry.key_types, referrers), body=sql.Literal(body.as_string())),
        *(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), target)
            for name in (TRIGGER_ROW, TRIGGER_UPDATE, TRIGGER_TRUNCATE, TRIGGER_TRUNCATE_BEGIN)
        ),
        sql.SQL("CREATE TRIGGER {name} AFTER INSERT OR DELETE ON {target} FOR EACH ROW EXECUTE FUNCTION {fn}()").format(
            name=sql.Identifier(TRIGGER_ROW), target=target, fn=fn
        ),
        *_update_trigger(entry, fn, watched),
        sql.SQL(
            "CREATE TRIGGER {name} AFTER TRUNCATE ON {target} FOR EACH STATEMENT "
            "EXECUTE FUNCTION pg2neo.capture_truncate()"
        ).format(name=sql.Identifier(TRIGGER_TRUNCATE), target=target),
        *_always(target, (TRIGGER_ROW, TRIGGER_UPDATE, TRIGGER_TRUNCATE)),
    ]


def _update_trigger(
    entry: NodeTable | JoinTable, fn: sql.Composable, watched: list[tuple[str, bool]]
) -> list[sql.Composable]:
    """The UPDATE trigger: it calls the function only when a watched column changed, and it depends on each watched
    column, so that PostgreSQL refuses `DROP COLUMN` of one (and `DROP COLUMN ... CASCADE` takes the trigger with
    it, which the schema watch reports as `capture_lost`).

    A WHEN clause is read back from its stored text and planned again for every UPDATE statement, at a cost that
    grows with each column it names: the comparison column by column was 60% of the capture's CPU on a
    single-row UPDATE. When the watched columns are all the table's columns (`include: all`, the usual case), the
    second statement replaces that trigger by one that lists them as `UPDATE OF` columns instead, which holds the
    same dependencies, costs nothing to check and cannot skip an UPDATE (its SET list always names one of them),
    and whose WHEN compares the two rows' bytes (`*<>`: a change of a column's value changes its bytes, and no
    equality operator is needed). A table with unwatched columns keeps the comparison of the watched ones: there
    an `UPDATE OF` list would skip an UPDATE whose SET list names only unwatched columns while a BEFORE trigger
    changes a watched one (a version bump). Which one a table gets is decided by its columns when `init` runs; a
    column added later is mapped only by the next `init` (the schema watch stops the service for an `include: all`
    table).
    """
    target = sql.Identifier(entry.schema, entry.name)
    name = sql.Identifier(TRIGGER_UPDATE)
    some_columns = sql.SQL(
        "CREATE TRIGGER {name} AFTER UPDATE ON {target} FOR EACH ROW WHEN ({old} IS DISTINCT FROM {new}) "
        "EXECUTE FUNCTION {fn}()"
    ).format(name=name, target=target, old=_row_of("OLD", watched), new=_row_of("NEW", watched), fn=fn)
    every_column = sql.SQL(
        "DROP TRIGGER {name} ON {target}; "
        "CREATE TRIGGER {name} AFTER UPDATE OF {columns} ON {target} FOR EACH ROW "
        "WHEN (OLD OPERATOR(pg_catalog.*<>) NEW) EXECUTE FUNCTION {fn}()"
    ).format(name=name, columns=sql.SQL(", ").join(sql.Identifier(c) for c, _ in watched), target=target, fn=fn)
    when_every_column = sql.SQL(
        """
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_attribute
        WHERE attrelid = {table}::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped
          AND attname <> ALL ({watched}::pg_catalog.name[])
    ) THEN
        EXECUTE {every_column};
    END IF;
END
"""
    ).format(
        table=sql.Literal(target.as_string()),
        watched=sql.Literal([c for c, _ in watched]),
        every_column=sql.Literal(every_column.as_string()),
    )
    return [some_columns, sql.SQL("DO {}").format(sql.Literal(when_every_column.as_string()))]


def _always(target: sql.Composable, names: tuple[str, ...]) -> list[sql.Composable]:
    """Fire also in sessions with session_replication_role = replica (pg_restore, logical-replication apply).

    On a partitioned table this reaches the row triggers PostgreSQL cloned onto its partitions, and partitions
    created or attached later inherit it (checked on PostgreSQL 15).
    """
    return [sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(target, sql.Identifier(name)) for name in names]


def partition_function_name(table: str) -> sql.Identifier:
    name = table.split(".", 1)[1]
    return sql.Identifier(SCHEMA, f"sync_to_neo4j_part_{name[:35]}_{_ident_suffix(table)}")


def partition_statements(entry: NodeTable | JoinTable, partitions: tuple[tuple[str, str], ...]) -> list[sql.Composable]:
    """TRUNCATE capture for a mapped partitioned table and each of its partitions (`(schema, name)`, any depth).

    PostgreSQL clones row triggers onto partitions but not statement triggers, and TRUNCATE of a partition does not
    fire the parent's. Each partition gets a BEFORE TRUNCATE trigger that queues a delete for every row it holds
    (the applier re-reads each key and, finding no row, deletes the node). When a whole table is truncated its
    partitions' triggers fire too; the ancestor's BEFORE trigger marks the statement in `pg2neo.truncating`, so they
    queue nothing and the ancestor's one TRUNCATE event stands for all of them.
    """
    fn = partition_function_name(entry.table)
    target = sql.Identifier(entry.schema, entry.name)
    keys = sql.SQL(", ").join(sql.SQL("r.{}::text").format(sql.Identifier(c)) for c in entry.key_columns)
    queue_rows = sql.SQL("INSERT INTO pg2neo.changes (tbl, op, key) SELECT $1, 'D', ARRAY[{}] FROM ").format(keys)
    body = sql.SQL(
        """
BEGIN{skip_own}
    IF NOT EXISTS (
        SELECT 1 FROM pg2neo.truncating m JOIN pg_partition_ancestors(TG_RELID) a ON a.relid = m.relid
        WHERE m.txid = pg_current_xact_id()
    ) THEN
        EXECUTE {queue_rows} || TG_RELID::regclass::text || ' AS r' USING {tbl};
    END IF;
    INSERT INTO pg2neo.truncating (txid, relid) VALUES (pg_current_xact_id(), TG_RELID) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
"""
    ).format(
        skip_own=sql.SQL(SKIP_OWN_WRITE),
        queue_rows=sql.Literal(queue_rows.as_string()),
        tbl=sql.Literal(entry.table),
    )
    statements: list[sql.Composable] = [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
            "SECURITY DEFINER SET search_path = pg_catalog, pg_temp {pinned} AS {body}"
        ).format(fn=fn, pinned=_pinned(entry.key_types, ()), body=sql.Literal(body.as_string())),
        sql.SQL(
            "CREATE TRIGGER {name} BEFORE TRUNCATE ON {target} FOR EACH STATEMENT "
            "EXECUTE FUNCTION pg2neo.capture_truncate_begin()"
        ).format(name=sql.Identifier(TRIGGER_TRUNCATE_BEGIN), target=target),
        *_always(target, (TRIGGER_TRUNCATE_BEGIN,)),
    ]
    for schema, name in partitions:
        part = sql.Identifier(schema, name)
        statements += [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_TRUNCATE), part),
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_TRUNCATE_END), part),
            sql.SQL(
                "CREATE TRIGGER {name} BEFORE TRUNCATE ON {part} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
            ).format(name=sql.Identifier(TRIGGER_TRUNCATE), part=part, fn=fn),
            sql.SQL(
                "CREATE TRIGGER {name} AFTER TRUNCATE ON {part} FOR EACH STATEMENT "
                "EXECUTE FUNCTION pg2neo.capture_truncate_end()"
            ).format(name=sql.Identifier(TRIGGER_TRUNCATE_END), part=part),
            *_always(part, (TRIGGER_TRUNCATE, TRIGGER_TRUNCATE_END)),
        ]
    return statements


TRUNCATE_FUNCTION = """
CREATE OR REPLACE FUNCTION pg2neo.capture_truncate() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM pg2neo.truncating WHERE txid = pg_current_xact_id();{skip_own}
    INSERT INTO pg2neo.changes (tbl, op, key) VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'T', NULL);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pg2neo.capture_truncate_begin() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO pg2neo.truncating (txid, relid) VALUES (pg_current_xact_id(), TG_RELID) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pg2neo.capture_truncate_end() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM pg2neo.truncating WHERE txid = pg_current_xact_id();
    RETURN NULL;
END $$
""".replace("{skip_own}", SKIP_OWN_WRITE)

# Per-table functions of pg2neo versions before the `sync_to_neo4j_` names (`capture_<table>_<hash8>`,
# `capture_part_<table>_<hash8>`): `init` replaces their triggers, then drops them once no trigger calls them.
DROP_OLD_FUNCTIONS = r"""
DO $$
DECLARE fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg2neo' AND p.proname ~ '^capture_(part_)?.*_[0-9a-f]{8}$'
          AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)
    LOOP
        EXECUTE 'DROP FUNCTION ' || fn::text;
    END LOOP;
END $$
"""

# Triggers on the application's tables that call a pg2neo function; clones on partitions come and go with their
# parent's trigger (PostgreSQL refuses to drop them alone), so only the originals are listed.
INSTALLED_TRIGGERS = """
SELECT n.nspname, c.relname, t.tgname
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname = 'pg2neo' AND n.nspname <> 'pg2neo' AND NOT t.tgisinternal AND t.tgparentid = 0
"""

# A mapped table's kind, and its partitions at every depth (none unless it is a partitioned table).
PARTITIONS = """
SELECT c.relkind = 'p', coalesce(array_agg(ARRAY[pn.nspname::text, pc.relname::text] ORDER BY t.level, pc.oid)
                                  FILTER (WHERE t.level > 0), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL pg_partition_tree(c.oid) AS t
JOIN pg_class pc ON pc.oid = t.relid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE n.nspname = %s AND c.relname = %s
GROUP BY c.relkind
"""


def trigger_statements(
    mapping: Mapping,
    partitioned: frozenset[str] = frozenset(),
    partitions: dict[str, tuple[tuple[str, str], ...]] | None = None,
) -> list[sql.Composable]:
    """The capture functions and triggers `init` installs (after the schema, transport/schema.py). `partitioned`: the
    mapped tables that are partitioned tables; `partitions`: their partitions (any depth) as (schema, name)."""
    statements: list[sql.Composable] = [sql.SQL(TRUNCATE_FUNCTION)]
    for entry in mapping.entries:
        statements += table_statements(entry, referrers(mapping, entry.table))
        if entry.table in partitioned:
            statements += partition_statements(entry, (partitions or {}).get(entry.table, ()))
    statements.append(sql.SQL(DROP_OLD_FUNCTIONS))
    # Trigger functions need no EXECUTE privilege to fire; nobody has a reason to call them otherwise.
    statements.append(sql.SQL("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pg2neo FROM PUBLIC"))
    return statements


def drop_trigger_statements(installed: list[tuple[str, ...]]) -> list[sql.Composed]:
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), sql.Identifier(schema, table))
        for schema, table, name in installed
    ]
