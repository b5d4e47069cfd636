"""Loading both sides of drift items: the row's mapped properties in PostgreSQL, the item's properties in Neo4j.

A node item's identity starts with its row key (as text); a join-table item's identity is its row key as JSON (the
relationship's `_pg2neo_key`). PostgreSQL's side is built the way the apply stage builds it (reader, converters,
`BatchBuilder`), so that both sides compare as verify compares them.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from neo4j import Driver
from psycopg import sql

from pg2neo.apply.core import KeyReader
from pg2neo.apply.cypher import graph_props, join_props_query, node_props_query
from pg2neo.capture.session import prepare_connection
from pg2neo.mapping.convert import key_from_text
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.reconcile.policies import Conflict
from pg2neo.reconcile.verify import Drift, Scope, scopes_of


def _node_key(scope: Scope, identity: tuple[str, ...]) -> tuple[str, ...]:
    return identity[: len(scope.entry.key_columns)]


def _join_key(identity: tuple[str, ...]) -> tuple[str, ...] | None:
    try:
        value = json.loads(identity[0])
    except ValueError:
        return None
    return tuple(value) if isinstance(value, list) else None


def item_key(scope: Scope, identity: tuple[str, ...]) -> tuple[str, ...] | None:
    """The row key (as text) of a drift item, or None when the graph item carries none a row could have."""
    return _join_key(identity) if scope.kind == "join" else _node_key(scope, identity)


def row_key(conflict: Conflict) -> tuple[str, ...] | None:
    return item_key(conflict.scope, conflict.drift.identity)


def valid_key(conn: psycopg.Connection[Any], entry: NodeTable | JoinTable, key: tuple[str, ...]) -> bool:
    """Whether PostgreSQL can read this key at all (an extra graph item may carry a key no row could have)."""
    if len(key) != len(entry.key_types):
        return False
    casts = sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(t)) for t in entry.key_types)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT {}").format(casts), list(key))
    except (psycopg.DataError, psycopg.errors.InvalidTextRepresentation):
        return False
    return True


def _pg_props(
    conn: psycopg.Connection[Any], reader: KeyReader, entry: NodeTable | JoinTable, key: tuple[str, ...]
) -> dict[str, Any] | None:
    rows = [r for r in reader.fetch(conn, entry, [key]) if r.row is not None]
    if not rows:
        return None
    batch = reader.build(rows)
    if isinstance(entry, NodeTable):
        writes = batch.nodes.get(entry.table)
        return graph_props(writes.upserts[0]["p"]) if writes and writes.upserts else None
    joins = batch.joins.get(entry.table)
    if joins and joins.upserts:
        u = joins.upserts[0]
        return {**u["p"], "_start": u["a"], "_end": u["b"]}
    return None


def _typed_key(node: NodeTable, key: tuple[str, ...]) -> list[Any]:
    return [key_from_text(c, t) for c, t in zip(node.key_column_objs, key, strict=True)]


def _neo4j_props(driver: Driver, database: str, scope: Scope, identity: tuple[str, ...]) -> dict[str, Any] | None:
    entry = scope.entry
    with driver.session(database=database) as session:
        if isinstance(entry, NodeTable):
            try:
                key = _typed_key(entry, _node_key(scope, identity))
            except ValueError:
                return None
            record = session.run(node_props_query(entry), k=key).single()
            return None if record is None else graph_props(record["p"])
        record = session.run(
            join_props_query(entry),
            rk=identity[0],
            ak=list(entry.start.key_props),
            bk=list(entry.end.key_props),
        ).single()
        if record is None:
            return None
        return {**graph_props(record["p"]), "_start": record["a"], "_end": record["b"]}


def load_conflicts(
    pg_dsn: str, driver: Driver, mapping: Mapping, drifts: list[Drift], database: str = "neo4j"
) -> list[Conflict]:
    """Each drift item with both sides' current state."""
    by_name = {s.name: s for s in scopes_of(mapping)}
    reader = KeyReader(mapping)
    out: list[Conflict] = []
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        prepare_connection(conn)
        for drift in drifts:
            scope = by_name[drift.scope]
            key = item_key(scope, drift.identity)
            readable = key is not None and valid_key(conn, scope.entry, key)
            pg = _pg_props(conn, reader, scope.entry, key) if key is not None and readable else None
            neo = _neo4j_props(driver, database, scope, drift.identity)
            out.append(Conflict(drift, scope, pg, neo))
    return out
