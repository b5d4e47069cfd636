"""`pg2neo init` and `pg2neo uninstall`: capture objects in PostgreSQL, constraints and indexes in Neo4j.

`init` is run by the role that owns the mapped tables (the migration role): creating triggers and enabling them
ALWAYS needs ownership, and the capture functions run as that role (SECURITY DEFINER), so the application's roles
need nothing on the `pg2neo` schema. The roles that run the service are granted what they need (`service_roles`,
remembered in `pg2neo.state` and granted again by every later `init`). docs/operations.md lists it all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import psycopg
from neo4j import Driver
from psycopg import sql

from pg2neo.apply.writer import GraphWriter
from pg2neo.capture.triggers import (
    INSTALLED_TRIGGERS,
    PARTITIONS,
    drop_trigger_statements,
    trigger_statements,
)
from pg2neo.errors import CaptureError, SchemaDriftError
from pg2neo.logs import event
from pg2neo.mapping.plan import Mapping
from pg2neo.transport.conflicts import CONFLICTS_DDL
from pg2neo.transport.schema import drop_schema, schema_statements, service_grant_statements
from pg2neo.transport.state import MAPPING, SERVICE_ROLES, read_state, write_state

log = logging.getLogger(__name__)

_NOT_OWNED = """
SELECT n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
  AND NOT pg_has_role(c.relowner, 'USAGE')
ORDER BY 1
"""


def fingerprint(mapping: Mapping) -> str:
    doc: list[dict[str, Any]] = [asdict(entry) for entry in mapping.entries]
    for entry in doc:
        entry.pop("line", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def partitions_of(conn: psycopg.Connection[Any], mapping: Mapping) -> dict[str, tuple[tuple[str, str], ...]]:
    """The mapped tables that are partitioned tables, each with its partitions at every depth."""
    found: dict[str, tuple[tuple[str, str], ...]] = {}
    for entry in mapping.entries:
        row = conn.execute(PARTITIONS, (entry.schema, entry.name)).fetchone()
        if row is not None and row[0]:
            found[entry.table] = tuple((schema, name) for schema, name in row[1])
    return found


def plan_sql(conn: psycopg.Connection[Any], mapping: Mapping, service_roles: Sequence[str] = ()) -> list[str]:
    partitions = partitions_of(conn, mapping)
    # A trigger is stale when it sits on a table that is neither mapped nor a partition of a mapped table any more
    # (an unmapped table, a detached partition).
    covered = set(mapping.tables) | {f"{s}.{n}" for parts in partitions.values() for s, n in parts}
    installed = [tuple(r) for r in conn.execute(INSTALLED_TRIGGERS).fetchall()]
    stale = [t for t in installed if f"{t[0]}.{t[1]}" not in covered]
    statements = [
        *drop_trigger_statements(stale),
        *schema_statements(),
        *trigger_statements(mapping, frozenset(partitions), partitions),
        sql.SQL(CONFLICTS_DDL),
    ]
    for role in service_roles:
        statements += service_grant_statements(role, mapping)
    return [s.as_string(conn) for s in statements]


def check_installer(
    conn: psycopg.Connection[Any], mapping: Mapping, partitions: dict[str, tuple[tuple[str, str], ...]]
) -> None:
    """`init` must run as the owner of every mapped table (and partition) and may create or own the pg2neo schema."""
    user = conn.execute("SELECT current_user").fetchone()
    me = str(user[0]) if user else "?"
    tables = [(e.schema, e.name) for e in mapping.entries]
    tables += [part for parts in partitions.values() for part in parts]
    not_owned = conn.execute(_NOT_OWNED, ([s for s, _ in tables], [n for _, n in tables])).fetchall()
    if not_owned:
        owners = sorted({owner for _, owner in not_owned})
        listed = ", ".join(f"{table} (owner {owner})" for table, owner in not_owned)
        raise CaptureError(
            f"`pg2neo init` must be run by the role that owns the mapped tables, and {me} does not own {listed}. "
            "Creating the capture triggers and enabling them for every session (ENABLE ALWAYS) needs ownership, "
            "and the capture functions run with the privileges of the role that installed them, so that the "
            f"application's roles need none on the pg2neo schema. Run `pg2neo init` as {' or '.join(owners)} "
            "(or a member of that role), with --service-role for the role that runs the service; "
            "see docs/operations.md, 'Privileges and roles'."
        )
    schema = conn.execute(
        "SELECT pg_get_userbyid(nspowner), pg_has_role(nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'pg2neo'"
    ).fetchone()
    if schema is None:
        can_create = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()
        if not (can_create and can_create[0]):
            raise CaptureError(
                f"`pg2neo init` creates the schema pg2neo, and {me} may not create schemas in this database: "
                f"GRANT CREATE ON DATABASE <this database> TO {me} (as its owner or a superuser), then run init again"
            )
    elif not schema[1]:
        raise CaptureError(
            f"the schema pg2neo belongs to {schema[0]}, and {me} is not that role: run `pg2neo init` as {schema[0]}, "
            "the role that installed pg2neo (or `pg2neo uninstall` as that role first, to install it anew)"
        )


def _check_roles(conn: psycopg.Connection[Any], roles: Sequence[str]) -> None:
    missing = [r for r in roles if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (r,)).fetchone() is None]
    if missing:
        raise CaptureError(
            f"service role {', '.join(missing)} does not exist: create it first "
            f"(CREATE ROLE {missing[0]} LOGIN PASSWORD '...'), then run `pg2neo init --service-role` again"
        )


def _remembered_roles(conn: psycopg.Connection[Any]) -> list[str]:
    try:
        with conn.transaction():
            roles = read_state(conn, SERVICE_ROLES)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
        return []  # not installed yet, or not readable by this role (which check_installer then refuses)
    return [str(r) for r in roles] if roles is not None else []


def init(
    conn: psycopg.Connection[Any],
    driver: Driver,
    mapping: Mapping,
    database: str = "neo4j",
    dry_run: bool = False,
    service_roles: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Install (or update) everything; idempotent. Returns the SQL and Cypher statements (run unless dry_run).

    `service_roles` are granted what `pg2neo run` and the other service commands need; they are remembered, and
    every later `init` grants them again (new pg2neo tables included).
    """
    roles = list(dict.fromkeys([*_remembered_roles(conn), *service_roles]))
    _check_roles(conn, roles)
    if not dry_run:
        check_installer(conn, mapping, partitions_of(conn, mapping))
    statements = plan_sql(conn, mapping, roles)
    writer = GraphWriter(driver, mapping, database)
    cypher = writer.schema_statements()
    if dry_run:
        return statements, cypher
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
            write_state(conn, MAPPING, {"fingerprint": fingerprint(mapping), "source": mapping.source})
            write_state(conn, SERVICE_ROLES, roles)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CaptureError(
            f"`pg2neo init` lacks a privilege: {str(exc).strip()}. Run it as the role that owns the mapped tables "
            "and the pg2neo schema; see docs/operations.md, 'Privileges and roles'"
        ) from exc
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if superuser and superuser[0]:
        event(
            log,
            "capture_installed_by_superuser",
            logging.WARNING,
            hint="the capture functions run as the installing role; prefer the tables' owner over a superuser",
        )
    writer.ensure_schema()
    return statements, cypher


def check_installed(conn: psycopg.Connection[Any], mapping: Mapping) -> None:
    """The triggers in PostgreSQL must be the ones generated for this mapping and this catalog."""
    try:
        installed = read_state(conn, MAPPING)
    except psycopg.errors.UndefinedTable as exc:
        conn.rollback()
        raise SchemaDriftError("pg2neo is not installed in this database: run `pg2neo init` first") from exc
    if installed is None:
        raise SchemaDriftError("pg2neo is not installed in this database: run `pg2neo init` first")
    if installed.get("fingerprint") != fingerprint(mapping):
        raise SchemaDriftError(
            "the mapping or the mapped tables changed since `pg2neo init` (columns, types or keys differ): "
            "run `pg2neo init` again to regenerate the capture triggers; queued changes are kept"
        )


def uninstall(conn: psycopg.Connection[Any]) -> int:
    """Drop every capture trigger (partitions' included) and the pg2neo schema; returns the triggers dropped."""
    installed = [tuple(r) for r in conn.execute(INSTALLED_TRIGGERS).fetchall()]
    with conn.transaction():
        for statement in drop_trigger_statements(installed):
            conn.execute(statement)
        drop_schema(conn)
    return len(installed)
