"""The Debezium PostgreSQL connector's configuration for a mapping, and what Debezium needs from the mapped tables.

Place in the data flow: capture (WAL) -> transport (Kafka). The connector reads the WAL through a replication slot
(`pgoutput`, a publication of the mapped tables only) and publishes one topic per table, keyed by the row's pg2neo
key, so that all events of one node or relationship stay in one partition, in commit order. pg2neo's sink applies
them.

Type handling is chosen so that every value arrives exact and can be turned back into the value the trigger path
reads from PostgreSQL:

- `decimal.handling.mode=string`: numeric as its exact decimal text (`1234.50`, `NaN`); `double` would round.
- `time.precision.mode=adaptive_time_microseconds`: date as days since 1970-01-01 (int); time as microseconds since
  midnight (int); timestamp as microseconds since the epoch (int); timestamptz as ISO 8601 text in UTC
  (`2024-01-02T01:04:05.123456Z`). timetz would arrive moved to UTC, its offset lost: `check_mapping` refuses it.
- `interval.handling.mode=string`: ISO 8601 (`P1Y2M3DT4H5M6.5S`), months, days and seconds kept apart.
- `binary.handling.mode=hex`: bytea as hex text (`deadbeef`); `hstore.handling.mode=json`: a JSON object as text.
- JSON converters with `schemas.enable=false`: the mapping knows every column's type; events stay small.
- `message.key.columns` = the mapping's keys: events keyed (so partitioned) by the node key / join row key.
- `skipped.operations=none`: TRUNCATE events are published (`op: "t"`).
- `tombstones.on.delete=true`: a delete is followed by a null-valued record with the same key (compactable topics).
- `heartbeat.interval.ms` (10 s): the slot's confirmed position moves on a quiet database, so WAL is not held.
- `unavailable.value.placeholder=PLACEHOLDER`: an unchanged TOASTed value the WAL does not carry arrives as
  `PLACEHOLDER`, the same text for text and bytea columns (checked in tests/integration/kafka).

Uuid, enums, json/jsonb (their text) and text arrive as strings, arrays as JSON arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from pg2neo.mapping.plan import Column, JoinTable, Mapping, NodeTable, SelectAs, ValueKind

PLACEHOLDER = "__debezium_unavailable_value"
# What a TOASTed bytea would look like if Debezium hex-encoded the placeholder like other bytes (binary.handling.mode).
# Debezium 3.7 sends the plain PLACEHOLDER text for bytea too (tests/integration/kafka); kept for sinks checking both.
PLACEHOLDER_HEX = PLACEHOLDER.encode().hex()
CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
DEFAULT_NAME = "pg2neo"
HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat"

# Value kinds whose Debezium form the sink turns back into exactly the value the trigger path reads (not timetz:
# Debezium sends it moved to UTC, losing the offset pg2neo keeps).
SUPPORTED_KINDS = {
    ValueKind.INT,
    ValueKind.FLOAT,
    ValueKind.NUMERIC,
    ValueKind.BOOL,
    ValueKind.TEXT,
    ValueKind.UUID,
    ValueKind.BYTES,
    ValueKind.DATE,
    ValueKind.TIMESTAMP,
    ValueKind.TIMESTAMPTZ,
    ValueKind.TIME,
    ValueKind.INTERVAL,
    ValueKind.JSON,
    ValueKind.ARRAY,
}
KEY_KINDS = {ValueKind.INT, ValueKind.TEXT, ValueKind.UUID, ValueKind.NUMERIC, ValueKind.BOOL, ValueKind.DATE}


@dataclass(frozen=True)
class ConnectorNames:
    """The names one connector owns in PostgreSQL and Kafka, all derived from the connector's name."""

    name: str = DEFAULT_NAME

    @property
    def slot(self) -> str:
        return re.sub(r"[^a-z0-9_]", "_", self.name.lower())

    @property
    def publication(self) -> str:
        return f"{self.slot}_publication"

    @property
    def topic_prefix(self) -> str:
        return self.name

    @property
    def heartbeat_topic(self) -> str:
        return f"{HEARTBEAT_TOPIC_PREFIX}.{self.topic_prefix}"

    @property
    def transaction_topic(self) -> str:
        """Transaction boundaries, published only with `provide.transaction.metadata=true`."""
        return f"{self.topic_prefix}.transaction"


def topic_of(names: ConnectorNames, table: str) -> str:
    """The topic Debezium publishes a table's events to: `<prefix>.<schema>.<table>` (`table` schema-qualified)."""
    return f"{names.topic_prefix}.{table}"


def connector_name_ok(name: str) -> bool:
    """Letters, digits, `_`, `.`, `-`: a valid Kafka topic prefix and Connect name; the slot name is derived."""
    return re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}", name) is not None


def captured_columns(mapping: Mapping, entry: NodeTable | JoinTable) -> list[str]:
    """Every column the sink needs from a row: its key, its mapped columns, and the foreign-key columns it draws
    relationships from (mapping order, no repeats)."""
    names: list[str] = list(entry.key_columns)
    names += [c.name for c in entry.columns]
    if isinstance(entry, NodeTable):
        for rel in entry.fk_rels:
            names += list(rel.columns)
    else:
        names += list(entry.start.columns) + list(entry.end.columns)
    return list(dict.fromkeys(names))


def connector_config(
    mapping: Mapping,
    pg_dsn: str,
    names: ConnectorNames | None = None,
    heartbeat_ms: int = 10_000,
    snapshot_mode: str = "initial",
    transaction_metadata: bool = False,
) -> dict[str, str]:
    """The Debezium connector configuration (for `PUT /connectors/<name>/config`) that captures exactly what the
    mapping reads. Pure: `pg_dsn` is only parsed. Its password goes into `database.password`: a caller that shows
    the configuration must mask it (`pg2neo kafka config` does)."""
    names = names or ConnectorNames()
    conninfo = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    tables = [entry.table for entry in mapping.entries]
    columns = [
        f"{re.escape(entry.table)}\\.{re.escape(c)}"
        for entry in mapping.entries
        for c in captured_columns(mapping, entry)
    ]
    keys = [f"{entry.table}:{','.join(entry.key_columns)}" for entry in mapping.entries]
    config = {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",
        "database.hostname": str(conninfo.get("host") or "127.0.0.1"),
        "database.port": str(conninfo.get("port") or 5432),
        "database.user": str(conninfo.get("user") or "postgres"),
        "database.password": str(conninfo.get("password") or ""),
        "database.dbname": str(conninfo.get("dbname") or "postgres"),
        "topic.prefix": names.topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": names.slot,
        "slot.drop.on.stop": "false",
        "publication.name": names.publication,
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(re.escape(t) for t in tables),
        "column.include.list": ",".join(columns),
        "message.key.columns": ";".join(keys),
        "snapshot.mode": snapshot_mode,
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive_time_microseconds",
        "interval.handling.mode": "string",
        "binary.handling.mode": "hex",
        "hstore.handling.mode": "json",
        "include.unknown.datatypes": "false",
        "unavailable.value.placeholder": PLACEHOLDER,
        "skipped.operations": "none",
        "tombstones.on.delete": "true",
        "provide.transaction.metadata": "true" if transaction_metadata else "false",
        "heartbeat.interval.ms": str(heartbeat_ms),
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "topic.creation.default.replication.factor": "-1",
        "topic.creation.default.partitions": "-1",
    }
    if conninfo.get("sslmode"):
        config["database.sslmode"] = str(conninfo["sslmode"])
    return config


# -- what Debezium needs from the tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaIdentity:
    """A table's REPLICA IDENTITY: `d` default (primary key), `i` an index, `f` full, `n` nothing."""

    mode: str
    columns: tuple[str, ...]  # the columns a delete's `before` carries (all columns for `f`)
    key_index: str | None = None  # a unique index on exactly the mapping's key that REPLICA IDENTITY can use


@dataclass(frozen=True)
class Problem:
    table: str  # schema-qualified, or "server" for what concerns the whole database server
    what: str
    fix: str
    blocking: bool = True  # the sink could not apply the events right (False: a warning)

    def __str__(self) -> str:
        kind = "blocking" if self.blocking else "warning"
        return f"{kind}: {self.table}: {self.what}\n  fix: {self.fix}"


# Types pg2neo stores as PostgreSQL's text form that Debezium sends in another form (money as a bare decimal, geometric
# types as structs, ranges and bit strings re-encoded, ...): the sink could not write the text trigger mode writes.
_NOT_EXACT = re.compile(
    r"^(money|point|line|lseg|box|path|polygon|circle|bit|bit varying|varbit|tsvector|tsquery|hstore|xml|"
    r"int4range|int8range|numrange|tsrange|tstzrange|daterange|.*multirange)\b"
)


def _column_problem(column: Column) -> str | None:
    if column.kind not in SUPPORTED_KINDS:
        return f"column `{column.name}` ({column.type_name}) does not arrive exact through Debezium"
    if column.select_as is SelectAs.JSONB_TEXT:
        return f"column `{column.name}` uses `types: json`, which Debezium cannot reproduce"
    if _NOT_EXACT.match(column.type_name):
        return f"column `{column.name}` ({column.type_name}) arrives from Debezium in a form unlike PostgreSQL's text"
    if column.select_as is SelectAs.TEXT and column.kind is ValueKind.TEXT:
        base = column.type_name.split("(")[0].strip()
        if base in ("integer", "bigint", "smallint", "boolean", "date") or base.startswith(("timestamp", "time ")):
            return f"column `{column.name}` uses `types: string` on {column.type_name}, unlike PostgreSQL's text"
    return None


def carried_props(mapping: Mapping, target_table: str, ref_columns: tuple[str, ...]) -> tuple[str, ...] | None:
    """The properties of `target_table`'s nodes that hold `ref_columns` (a foreign key's referenced columns), so the
    sink can find the end node from the event alone; None when the target does not carry them all."""
    target = mapping.entry(target_table)
    if not isinstance(target, NodeTable):
        return None
    by_name = {c.name: c.prop for c in target.columns}
    if not all(name in by_name for name in ref_columns):
        return None
    return tuple(by_name[name] for name in ref_columns)


def _relationship_problems(mapping: Mapping, entry: NodeTable | JoinTable) -> list[Problem]:
    rels = (
        [(r.type, r.needs_join, r.columns, r.target_table, r.ref_columns) for r in entry.fk_rels]
        if isinstance(entry, NodeTable)
        else [(entry.type, e.needs_join, e.columns, e.table, e.ref_columns) for e in (entry.start, entry.end)]
    )
    problems: list[Problem] = []
    for rtype, needs_join, columns, target, ref_columns in rels:
        if not needs_join or carried_props(mapping, target, ref_columns) is not None:
            continue
        refs = ", ".join(ref_columns)
        problems.append(
            Problem(
                entry.table,
                f"relationship {rtype} ({', '.join(columns)} -> {target}.{refs}) references column(s) that are not "
                f"{target}'s node key, and {target}'s nodes do not carry them as properties: the sink reads no "
                "PostgreSQL, so it could not find the end node",
                f"map {refs} as a property of {target} (remove it from `properties: exclude`), or key {target}'s "
                "nodes by the referenced column(s)",
            )
        )
    return problems


def _identity_problem(entry: NodeTable | JoinTable, identity: ReplicaIdentity) -> Problem | None:
    cols = ", ".join(entry.key_columns)
    index = identity.key_index or f"<a unique index on ({cols}), its columns NOT NULL>"
    hint = (
        f"ALTER TABLE {entry.table} REPLICA IDENTITY USING INDEX {index}; "
        f"or ALTER TABLE {entry.table} REPLICA IDENTITY FULL"
    )
    if identity.mode == "n" or not identity.columns:
        return Problem(
            entry.table,
            "the table has no replica identity (no primary key, or REPLICA IDENTITY NOTHING): once it is in the "
            "connector's publication, PostgreSQL refuses every UPDATE and DELETE on it, and delete events would "
            "carry no key",
            hint,
        )
    if not set(entry.key_columns) <= set(identity.columns):
        return Problem(
            entry.table,
            f"a delete's event carries only the replica identity ({', '.join(identity.columns)}), not the key "
            f"({cols}): deletes could not be applied, and a change of the key would not be seen",
            hint,
        )
    return None


def check_mapping(mapping: Mapping, identities: dict[str, ReplicaIdentity] | None = None) -> list[Problem]:
    """What the sink needs from the mapping (and, given `identities`, from the tables' replica identities), each
    with how to fix it. Pure."""
    problems: list[Problem] = []
    for entry in mapping.entries:
        for column in entry.columns:
            reason = _column_problem(column)
            if reason is not None:
                fix = f"exclude it (`properties: {{exclude: [{column.name}]}}`) in Kafka mode"
                problems.append(Problem(entry.table, reason, fix))
        for column in (c for c in entry.columns if c.name in entry.key_columns):
            if column.kind not in KEY_KINDS:
                problems.append(
                    Problem(
                        entry.table,
                        f"key column `{column.name}` ({column.type_name}) is not supported as a key in Kafka mode",
                        "key the table by an integer, text, uuid, numeric, boolean or date column",
                    )
                )
        problems += _relationship_problems(mapping, entry)
        identity = (identities or {}).get(entry.table)
        problem = None if identity is None else _identity_problem(entry, identity)
        if problem is not None:
            problems.append(problem)
    return problems


# -- the live database ----------------------------------------------------------------------------------------------

_IDENTITY_SQL = """
SELECT c.relreplident::text,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                   FROM pg_index i JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
                  WHERE i.indrelid = c.oid
                    AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))),
                '{}'),
       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
  FROM pg_class c WHERE c.oid = %s::regclass
"""

# A unique index REPLICA IDENTITY USING INDEX accepts: not partial, no expressions, not deferrable, NOT NULL columns.
_KEY_INDEX_SQL = """
SELECT i.indexrelid::regclass::text
  FROM pg_index i
 WHERE i.indrelid = %(table)s::regclass AND i.indisunique AND i.indimmediate AND i.indpred IS NULL
   AND i.indexprs IS NULL
   AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
         WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = %(key)s::text[]
   AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)
 ORDER BY i.indisprimary DESC, 1
 LIMIT 1
"""

_TABLE_SQL = """
SELECT c.relkind::text,
       coalesce((SELECT array_agg(a.attname::text) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''), '{}'),
       pg_has_role(c.relowner, 'USAGE')
  FROM pg_class c WHERE c.oid = %s::regclass
"""

_SERVER_SQL = """
SELECT current_setting('wal_level'),
       current_setting('max_slot_wal_keep_size'),
       (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user),
       current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
       current_database()
"""

_SLOT_SQL = """
SELECT database, plugin, active,
       pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn)))
  FROM pg_replication_slots WHERE slot_name = %s
"""


def replica_identities(conn: psycopg.Connection[Any], mapping: Mapping) -> dict[str, ReplicaIdentity]:
    """Each mapped table's replica identity: which columns a delete (and an update's `before`) carries."""
    out: dict[str, ReplicaIdentity] = {}
    for entry in mapping.entries:
        row = conn.execute(_IDENTITY_SQL, (entry.table,)).fetchone()
        if row is None:
            continue
        mode, index_columns, all_columns = row
        columns = tuple(all_columns or ()) if mode == "f" else tuple(index_columns or ())
        index = conn.execute(_KEY_INDEX_SQL, {"table": entry.table, "key": sorted(entry.key_columns)}).fetchone()
        out[entry.table] = ReplicaIdentity(mode, columns, None if index is None else str(index[0]))
    return out


def _server_problems(conn: psycopg.Connection[Any], names: ConnectorNames) -> list[Problem]:
    row = conn.execute(_SERVER_SQL).fetchone()
    assert row is not None
    wal_level, keep_size, may_replicate, free_slots, database = row
    problems: list[Problem] = []
    if wal_level != "logical":
        problems.append(
            Problem(
                "server",
                f"wal_level is {wal_level}: Debezium reads the WAL by logical decoding",
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
            )
        )
    if not may_replicate:
        problems.append(
            Problem(
                "server",
                "the connecting role may not open a replication connection",
                "ALTER ROLE <the connector's user> REPLICATION (and allow `replication` for it in pg_hba.conf)",
            )
        )
    slot = conn.execute(_SLOT_SQL, (names.slot,)).fetchone()
    if slot is None and free_slots <= 0:
        problems.append(
            Problem(
                "server",
                "every replication slot is in use (max_replication_slots): the connector cannot create its own",
                "raise max_replication_slots (restart), or drop an unused slot: SELECT pg_drop_replication_slot(...)",
            )
        )
    if slot is not None:
        slot_db, plugin, active, behind = slot
        if slot_db != database or plugin != "pgoutput":
            problems.append(
                Problem(
                    "server",
                    f"replication slot {names.slot} already exists for database {slot_db} with plugin {plugin}",
                    "choose another connector name (--name), or drop that slot if nothing uses it",
                )
            )
        else:
            problems.append(
                Problem(
                    "server",
                    f"replication slot {names.slot} exists ({'active' if active else 'inactive'}, {behind} of WAL "
                    "behind): the connector resumes from it",
                    "nothing, if this is the same connector; otherwise choose another --name",
                    blocking=False,
                )
            )
    if keep_size == "-1":
        problems.append(
            Problem(
                "server",
                "max_slot_wal_keep_size is unlimited: while the connector is down, its slot holds WAL without bound",
                "ALTER SYSTEM SET max_slot_wal_keep_size = '<e.g. 20GB>'; SELECT pg_reload_conf(); and watch "
                "pg_replication_slots",
                blocking=False,
            )
        )
    return problems


def _table_problems(conn: psycopg.Connection[Any], mapping: Mapping, server_version: int) -> list[Problem]:
    problems: list[Problem] = []
    for entry in mapping.entries:
        row = conn.execute(_TABLE_SQL, (entry.table,)).fetchone()
        if row is None:
            continue
        relkind, generated, owned = row
        if relkind == "p":
            problems.append(
                Problem(
                    entry.table,
                    "a partitioned table: a publication made by Debezium publishes its partitions' changes under "
                    "the partitions' names, which the mapping does not know",
                    f"CREATE PUBLICATION <publication> FOR TABLE {entry.table} WITH (publish_via_partition_root = "
                    "true) yourself (with every other mapped table), and register with "
                    "publication.autocreate.mode=disabled",
                )
            )
        missing = sorted(set(generated) & set(captured_columns(mapping, entry)))
        if missing and server_version < 180000:
            problems.append(
                Problem(
                    entry.table,
                    f"generated column(s) {', '.join(missing)}: pgoutput does not publish generated columns before "
                    "PostgreSQL 18, so their values never arrive",
                    "exclude them in Kafka mode, or make them ordinary columns written by the application",
                )
            )
        if not owned:
            problems.append(
                Problem(
                    entry.table,
                    "the connecting role does not own the table, so Debezium cannot create or change the "
                    "publication (`publication.autocreate.mode=filtered` needs ownership)",
                    "create the publication beforehand as the owner (CREATE PUBLICATION <name> FOR TABLE <every "
                    "mapped table>), or connect as the owner",
                    blocking=False,
                )
            )
    return problems


def check_database(conn: psycopg.Connection[Any], mapping: Mapping, names: ConnectorNames) -> list[Problem]:
    """`check_mapping` with the live tables' replica identities, plus what the server and the tables need for
    Debezium: logical WAL, a role that may replicate, a free slot, a bounded WAL hold, no partitioned tables or
    generated columns it cannot publish."""
    row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    problems = _server_problems(conn, names)
    problems += check_mapping(mapping, replica_identities(conn, mapping))
    problems += _table_problems(conn, mapping, int(row[0]))
    return problems
