"""`pg2neo init` and `pg2neo uninstall`: capture objects in PostgreSQL, constraints and indexes in Neo4j."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

import psycopg
from neo4j import Driver

from pg2neo.apply.writer import GraphWriter
from pg2neo.capture.outbox_sql import INSTALLED_TRIGGERS, drop_trigger_statements, install_statements
from pg2neo.errors import SchemaDriftError
from pg2neo.mapping.plan import Mapping


def fingerprint(mapping: Mapping) -> str:
    doc: list[dict[str, Any]] = [asdict(entry) for entry in mapping.entries]
    for entry in doc:
        entry.pop("line", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def plan_sql(conn: psycopg.Connection[Any], mapping: Mapping) -> list[str]:
    installed = [tuple(r) for r in conn.execute(INSTALLED_TRIGGERS).fetchall()]
    mapped = set(mapping.tables)
    stale = [t for t in installed if f"{t[0]}.{t[1]}" not in mapped]
    statements = drop_trigger_statements(stale) + install_statements(mapping)
    return [s.as_string(conn) for s in statements]


def init(
    conn: psycopg.Connection[Any], driver: Driver, mapping: Mapping, database: str = "neo4j", dry_run: bool = False
) -> tuple[list[str], list[str]]:
    """Install (or update) everything; idempotent. Returns the SQL and Cypher statements (run unless dry_run)."""
    statements = plan_sql(conn, mapping)
    writer = GraphWriter(driver, mapping, database)
    cypher = writer.schema_statements()
    if dry_run:
        return statements, cypher
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO pg2neo.state (name, value) VALUES ('mapping', %s) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            (json.dumps({"fingerprint": fingerprint(mapping), "source": mapping.source}),),
        )
    writer.ensure_schema()
    return statements, cypher


def check_installed(conn: psycopg.Connection[Any], mapping: Mapping) -> None:
    """The triggers in PostgreSQL must be the ones generated for this mapping and this catalog."""
    try:
        row = conn.execute("SELECT value FROM pg2neo.state WHERE name = 'mapping'").fetchone()
    except psycopg.errors.UndefinedTable as exc:
        conn.rollback()
        raise SchemaDriftError("pg2neo is not installed in this database: run `pg2neo init` first") from exc
    if row is None:
        raise SchemaDriftError("pg2neo is not installed in this database: run `pg2neo init` first")
    if row[0].get("fingerprint") != fingerprint(mapping):
        raise SchemaDriftError(
            "the mapping or the mapped tables changed since `pg2neo init` (columns, types or keys differ): "
            "run `pg2neo init` again to regenerate the capture triggers; queued changes are kept"
        )


def uninstall(conn: psycopg.Connection[Any]) -> int:
    installed = [tuple(r) for r in conn.execute(INSTALLED_TRIGGERS).fetchall()]
    with conn.transaction():
        for statement in drop_trigger_statements(installed):
            conn.execute(statement)
        conn.execute("DROP SCHEMA IF EXISTS pg2neo CASCADE")
    return len(installed)
