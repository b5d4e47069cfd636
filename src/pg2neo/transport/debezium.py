"""The Debezium PostgreSQL connector's configuration for a mapping, and what Debezium needs from the mapped tables.

Place in the data flow: capture (WAL) -> transport (Kafka). The connector reads the WAL through a replication slot
(`pgoutput`, a publication of the mapped tables only) and publishes one topic per table, keyed by the row's pg2neo
key, so that all events of one node or relationship stay in one partition, in commit order. pg2neo's sink
(`transport/sink.py`) applies them.

Type handling is chosen so that every value arrives exact and can be turned into the value the trigger path reads
from PostgreSQL (`transport/events.py` does that):

| setting | value | why |
|---|---|---|
| `decimal.handling.mode` | `string` | numerics as their exact decimal text (`double` rounds) |
| `time.precision.mode` | `adaptive_time_microseconds` | timestamps, times in microseconds, dates in days |
| `interval.handling.mode` | `string` | ISO 8601 (`P1Y2M3DT4H5.5S`): months, days, seconds kept apart |
| `binary.handling.mode` | `hex` | bytea as hex text, decoded to the same bytes |
| `hstore.handling.mode` | `json` | |
| converters | JSON, `schemas.enable=false` | the mapping knows every column's type; events stay small |
| `message.key.columns` | the mapping's keys | events keyed (so partitioned) by the node key / join row key |
| `skipped.operations` | `none` | TRUNCATE events are published |
| `tombstones.on.delete` | `true` | topics can be compacted; the sink skips tombstones |
| `heartbeat.interval.ms` | 10 s | the slot's confirmed position moves on a quiet database, so WAL is not held |

Uuid, enums, json/jsonb (their text) and text arrive as strings, arrays as JSON arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg

from pg2neo.mapping.plan import Column, JoinTable, Mapping, NodeTable, SelectAs, ValueKind

PLACEHOLDER = "__debezium_unavailable_value"
CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
DEFAULT_NAME = "pg2neo"

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
    """The names one connector owns in PostgreSQL and Kafka."""

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


def topic_of(names: ConnectorNames, table: str) -> str:
    """The topic Debezium publishes a table's events to: `<prefix>.<schema>.<table>`."""
    return f"{names.topic_prefix}.{table}"


def _regex(name: str) -> str:
    return re.escape(name)


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
) -> dict[str, str]:
    """The Debezium connector configuration (for `PUT /connectors/<name>/config`) that captures exactly what the
    mapping reads. Pure: `pg_dsn` is only parsed (its password goes into the config, which Connect keeps)."""
    names = names or ConnectorNames()
    conninfo = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    parts = urlsplit(pg_dsn) if "://" in pg_dsn else None
    host = str(conninfo.get("host") or (parts.hostname if parts else None) or "127.0.0.1")
    port = str(conninfo.get("port") or (parts.port if parts else None) or 5432)
    tables = [entry.table for entry in mapping.entries]
    columns = [
        f"{_regex(entry.table)}\\.{_regex(c)}" for entry in mapping.entries for c in captured_columns(mapping, entry)
    ]
    keys = [f"{entry.table}:{','.join(entry.key_columns)}" for entry in mapping.entries]
    return {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",
        "database.hostname": host,
        "database.port": port,
        "database.user": str(conninfo.get("user") or "postgres"),
        "database.password": str(conninfo.get("password") or ""),
        "database.dbname": str(conninfo.get("dbname") or "postgres"),
        "topic.prefix": names.topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": names.slot,
        "publication.name": names.publication,
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(_regex(t) for t in tables),
        "column.include.list": ",".join(columns),
        "message.key.columns": ";".join(keys),
        "snapshot.mode": snapshot_mode,
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive_time_microseconds",
        "interval.handling.mode": "string",
        "binary.handling.mode": "hex",
        "hstore.handling.mode": "json",
        "include.unknown.datatypes": "false",
        "skipped.operations": "none",
        "tombstones.on.delete": "true",
        "heartbeat.interval.ms": str(heartbeat_ms),
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "topic.creation.default.replication.factor": "-1",
        "topic.creation.default.partitions": "-1",
    }


# -- what Debezium needs from the tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaIdentity:
    """A table's REPLICA IDENTITY: `d` default (primary key), `i` an index, `f` full, `n` nothing."""

    mode: str
    columns: tuple[str, ...]  # the columns a delete's `before` carries (all columns for `f`)


@dataclass(frozen=True)
class Problem:
    table: str
    what: str
    fix: str
    blocking: bool = True  # the sink refuses to run (False: a warning)

    def __str__(self) -> str:
        return f"{self.table}: {self.what}\n  fix: {self.fix}"


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


def replica_identities(conn: psycopg.Connection[Any], mapping: Mapping) -> dict[str, ReplicaIdentity]:
    out: dict[str, ReplicaIdentity] = {}
    for entry in mapping.entries:
        row = conn.execute(_IDENTITY_SQL, (entry.table,)).fetchone()
        if row is None:
            continue
        mode, index_columns, all_columns = row
        columns = tuple(all_columns or ()) if mode == "f" else tuple(index_columns or ())
        out[entry.table] = ReplicaIdentity(mode, columns)
    return out


def _unique_index_hint(entry: NodeTable | JoinTable) -> str:
    cols = ", ".join(entry.key_columns)
    return (
        f"ALTER TABLE {entry.table} REPLICA IDENTITY USING INDEX <the unique index on ({cols})>; "
        f"or ALTER TABLE {entry.table} REPLICA IDENTITY FULL"
    )


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


def check_mapping(mapping: Mapping, identities: dict[str, ReplicaIdentity] | None = None) -> list[Problem]:
    """What the sink needs from the mapping and the tables, each with how to fix it (pure)."""
    problems: list[Problem] = []
    for entry in mapping.entries:
        for column in entry.columns:
            reason = _column_problem(column)
            if reason is not None:
                problems.append(
                    Problem(
                        entry.table, reason, f"exclude it (`properties: {{exclude: [{column.name}]}}`) in Kafka mode"
                    )
                )
        for column in (c for c in entry.columns if c.name in entry.key_columns):
            if column.kind not in KEY_KINDS:
                problems.append(
                    Problem(
                        entry.table,
                        f"key column `{column.name}` ({column.type_name}) is not supported as a key in Kafka mode",
                        "key the table by an integer, text, uuid, numeric-as-string, boolean or date column",
                    )
                )
        rels = (
            [(r.type, r.needs_join, r.columns, r.target_table) for r in entry.fk_rels]
            if isinstance(entry, NodeTable)
            else [(entry.type, e.needs_join, e.columns, e.table) for e in (entry.start, entry.end)]
        )
        for rtype, needs_join, columns, target in rels:
            if needs_join:
                problems.append(
                    Problem(
                        entry.table,
                        f"relationship {rtype} ({', '.join(columns)} -> {target}) references a column that is not "
                        f"{target}'s node key: finding the node key needs a PostgreSQL read, which the Kafka sink "
                        "does not do (yet)",
                        f"reference {target}'s node key column(s) from {entry.table}, or key {target}'s nodes by the "
                        "referenced column(s), or use trigger mode for this mapping",
                    )
                )
        if identities is None:
            continue
        identity = identities.get(entry.table)
        if identity is None:
            continue
        if identity.mode == "n" or not set(entry.key_columns) <= set(identity.columns):
            problems.append(
                Problem(
                    entry.table,
                    f"a delete's event carries only the replica identity ({', '.join(identity.columns) or 'nothing'}), "
                    f"not the key ({', '.join(entry.key_columns)}): deletes could not be applied, and a change of "
                    "the key would not be seen",
                    _unique_index_hint(entry),
                )
            )
    return problems


def connector_name_ok(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) is not None
