"""Carrying a "neo4j" decision out: PostgreSQL rewritten from the graph, and graph items no row can map to deleted.

`write_pg` writes one item's row (node table, join table, or a foreign key's columns) from the graph's state; the
caller runs it in a transaction marked as pg2neo's own write (`SET LOCAL pg2neo.origin = 'pg2neo'`), so the capture
triggers do not queue it. `delete_in_graph` removes an extra item whose key is no row key at all.
"""

from __future__ import annotations

from typing import Any

import psycopg
from neo4j import Driver
from neo4j.time import Date, DateTime, Duration, Time
from psycopg import sql

from pg2neo.apply.cypher import DELETE_REL_BY_ELEMENT_ID, delete_join_query, delete_node_by_key_text_query
from pg2neo.errors import ReconcileError
from pg2neo.mapping.plan import Column, JoinTable, Mapping, NodeTable
from pg2neo.reconcile.policies import Conflict
from pg2neo.reconcile.sides import row_key


def _to_pg_value(value: Any) -> Any:
    if isinstance(value, DateTime | Date | Time):
        return value.to_native()
    if isinstance(value, Duration):
        seconds = value.seconds + value.nanoseconds / 1e9
        return f"P{value.months}M{value.days}DT{seconds!r}S"
    if isinstance(value, list):
        return [_to_pg_value(v) for v in value]
    return value


def _param(column: Column, value: Any) -> sql.Composable:
    return sql.SQL("{}::{}").format(
        sql.Literal(None) if value is None else sql.Placeholder(), sql.SQL(column.type_name)
    )


def _key_where(entry: NodeTable | JoinTable, key: tuple[str, ...]) -> tuple[sql.Composable, list[Any]]:
    parts = [
        sql.SQL("{} = %s::{}").format(sql.Identifier(c), sql.SQL(t))
        for c, t in zip(entry.key_columns, entry.key_types, strict=True)
    ]
    return sql.SQL(" AND ").join(parts), list(key)


def _write_node(
    conn: psycopg.Connection[Any], entry: NodeTable, key: tuple[str, ...], props: dict[str, Any] | None
) -> None:
    table = sql.Identifier(entry.schema, entry.name)
    where, params = _key_where(entry, key)
    if props is None:
        conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, where), params)
        return
    columns = [c for c in entry.columns if c.name not in entry.key_columns]
    values = [_to_pg_value(props.get(c.prop)) for c in columns]
    exists = conn.execute(sql.SQL("SELECT 1 FROM {} WHERE {}").format(table, where), params).fetchone()
    if exists:
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c.name), _param(c, v))
            for c, v in zip(columns, values, strict=True)
        )
        conn.execute(
            sql.SQL("UPDATE {} SET {} WHERE {}").format(table, sets, where),
            [v for v in values if v is not None] + params,
        )
        return
    present = [(c, _to_pg_value(props[c.prop])) for c in entry.columns if props.get(c.prop) is not None]
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table,
            sql.SQL(", ").join(sql.Identifier(c.name) for c, _ in present),
            sql.SQL(", ").join(_param(c, v) for c, v in present),
        ),
        [v for _, v in present],
    )


def _write_join(
    conn: psycopg.Connection[Any],
    mapping: Mapping,
    entry: JoinTable,
    key: tuple[str, ...],
    props: dict[str, Any] | None,
) -> None:
    table = sql.Identifier(entry.schema, entry.name)
    where, params = _key_where(entry, key)
    conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, where), params)
    if props is None:
        return
    exprs: dict[str, tuple[sql.Composable, list[Any]]] = {}
    for col, type_name, text in zip(entry.key_columns, entry.key_types, key, strict=True):
        exprs[col] = (sql.SQL("%s::{}").format(sql.SQL(type_name)), [text])
    for end, node_key in ((entry.start, props["_start"]), (entry.end, props["_end"])):
        target = mapping.node(end.table)
        t_where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in target.key_columns)
        for col, ref in zip(end.columns, end.ref_columns, strict=True):
            exprs[col] = (
                sql.SQL("(SELECT {} FROM {} WHERE {})").format(
                    sql.Identifier(ref), sql.Identifier(target.schema, target.name), t_where
                ),
                [_to_pg_value(v) for v in node_key],
            )
    for c in entry.columns:
        if c.prop in entry.props and props.get(c.prop) is not None:
            exprs[c.name] = (_param(c, props[c.prop]), [_to_pg_value(props[c.prop])])
    names = list(exprs)
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table, sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(exprs[n][0] for n in names)
        ),
        [p for n in names for p in exprs[n][1]],
    )


def _write_fk(conn: psycopg.Connection[Any], mapping: Mapping, conflict: Conflict) -> None:
    """The graph has (extra) or lacks (missing) this foreign-key relationship: set the row's columns to match."""
    entry = conflict.scope.entry
    rel = conflict.scope.rel
    assert isinstance(entry, NodeTable) and rel is not None
    ident = conflict.drift.identity
    key = ident[: len(entry.key_columns)]
    target_key = ident[len(entry.key_columns) + 1 :]
    table = sql.Identifier(entry.schema, entry.name)
    where, params = _key_where(entry, key)
    if conflict.drift.kind == "missing":
        sets = sql.SQL(", ").join(sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in rel.columns)
        conn.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(table, sets, where), params)
        return
    target = mapping.node(rel.target_table)
    t_where = sql.SQL(" AND ").join(
        sql.SQL("x.{} = %s::{}").format(sql.Identifier(c), sql.SQL(t))
        for c, t in zip(target.key_columns, target.key_types, strict=True)
    )
    sets = sql.SQL(", ").join(
        sql.SQL("{} = (SELECT x.{} FROM {} AS x WHERE {})").format(
            sql.Identifier(c), sql.Identifier(r), sql.Identifier(target.schema, target.name), t_where
        )
        for c, r in zip(rel.columns, rel.ref_columns, strict=True)
    )
    conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE {}").format(table, sets, where),
        [v for _ in rel.columns for v in target_key] + params,
    )


def write_pg(conn: psycopg.Connection[Any], mapping: Mapping, conflict: Conflict) -> None:
    """Make PostgreSQL hold the graph's state of this item (the row deleted where the graph has nothing)."""
    entry = conflict.scope.entry
    key = row_key(conflict)
    if key is None:
        raise ReconcileError(f"{conflict.drift.scope} {list(conflict.drift.identity)}: no row key in the graph")
    if conflict.scope.kind == "node":
        assert isinstance(entry, NodeTable)
        _write_node(conn, entry, key, conflict.neo4j_props)
    elif conflict.scope.kind == "join":
        assert isinstance(entry, JoinTable)
        _write_join(conn, mapping, entry, key, conflict.neo4j_props)
    else:
        _write_fk(conn, mapping, conflict)


def delete_in_graph(driver: Driver, database: str, conflict: Conflict) -> None:
    """An extra item whose key is no row key: nothing in PostgreSQL can ever map to it, so it goes directly."""
    entry = conflict.scope.entry
    identity = conflict.drift.identity
    with driver.session(database=database) as session:
        if isinstance(entry, JoinTable):
            if identity[0].startswith("<no "):
                eid = identity[0].rsplit(": ", 1)[-1].rstrip(">")
                session.run(DELETE_REL_BY_ELEMENT_ID, eid=eid).consume()
            else:
                session.run(delete_join_query(entry), rk=identity[0]).consume()
            return
        key = list(identity[: len(entry.key_props)])
        session.run(delete_node_by_key_text_query(entry), props=list(entry.key_props), k=key).consume()
