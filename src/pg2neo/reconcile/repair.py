"""`pg2neo reconcile`: settle the drift `verify` found, by policy (the last step of the reconcile stage).

Each drift item gets a decision, "pg" (Neo4j is rewritten from PostgreSQL) or "neo4j" (PostgreSQL is rewritten
from the graph), or none (left alone, or queued in `pg2neo.conflicts` by the manual policy).
- "pg" re-uses the engine: the item's row key is queued in `pg2neo.changes` and the engine applies it with a
  fresh epoch under the apply lock (a key whose row is gone deletes the node or relationship).
- "neo4j" writes the row in PostgreSQL in a transaction with `SET LOCAL pg2neo.origin = 'pg2neo'`, so the
  capture triggers do not queue it; the same keys are then re-applied by the engine once, so that what the
  write changed besides the mapped values (a version column bumped by a trigger) reaches the graph as well.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from neo4j import Driver
from neo4j.time import Date, DateTime, Duration, Time
from psycopg import sql

from pg2neo.apply.batch import BatchBuilder
from pg2neo.apply.cypher import q
from pg2neo.apply.reader import by_keys_query
from pg2neo.capture.outbox_sql import mark_own_write
from pg2neo.capture.session import prepare_connection
from pg2neo.errors import ReconcileError
from pg2neo.mapping.convert import key_from_text
from pg2neo.mapping.hashing import props_hash, user_props
from pg2neo.mapping.plan import Column, JoinTable, Mapping, NodeTable
from pg2neo.reconcile.conflicts import get_conflict, record_conflicts
from pg2neo.reconcile.verify import Drift, Scope, scopes_of, verify

Decision = str | None  # "pg" | "neo4j" | None
Decider = Callable[["Conflict"], Decision]

POLICIES = ("pg-wins", "neo4j-wins", "last-write-wins", "manual")


@dataclass
class Conflict:
    """One drift item with both sides' current state (None where that side has nothing)."""

    drift: Drift
    scope: Scope
    pg_row: dict[str, Any] | None
    neo4j_props: dict[str, Any] | None
    decision: Decision = None

    @property
    def context(self) -> dict[str, Any]:
        return {
            "scope": self.drift.scope,
            "kind": self.drift.kind,
            "identity": list(self.drift.identity),
            "table": self.scope.entry.table,
        }


@dataclass
class RepairResult:
    planned: list[Conflict]
    applied: bool
    to_pg: int = 0
    to_neo4j: int = 0
    conflicts_recorded: int = 0
    errors: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "rewrite_neo4j_from_pg": self.to_neo4j,
            "rewrite_pg_from_neo4j": self.to_pg,
            "conflicts_recorded": self.conflicts_recorded,
            "errors": self.errors or [],
            "items": [
                {
                    "scope": c.drift.scope,
                    "kind": c.drift.kind,
                    "identity": list(c.drift.identity),
                    "decision": c.decision,
                }
                for c in self.planned
            ],
        }


# -- reading both sides of one item --------------------------------------------------------------------------------


def _node_key(scope: Scope, identity: tuple[str, ...]) -> tuple[str, ...]:
    entry = scope.entry
    return identity[: len(entry.key_columns)]


def _join_key(identity: tuple[str, ...]) -> tuple[str, ...] | None:
    try:
        value = json.loads(identity[0])
    except ValueError:
        return None
    return tuple(value) if isinstance(value, list) else None


def _pg_props(
    conn: psycopg.Connection[Any], mapping: Mapping, entry: NodeTable | JoinTable, key: tuple[str, ...]
) -> dict[str, Any] | None:
    rows = conn.execute(by_keys_query(mapping, entry), [[k] for k in key]).fetchall()
    if not rows:
        return None
    batch = BatchBuilder(mapping).new_batch()
    BatchBuilder(mapping).add_rows(batch, entry, rows)
    if isinstance(entry, NodeTable):
        writes = batch.nodes.get(entry.table)
        return user_props(writes.upserts[0]["p"]) if writes and writes.upserts else None
    joins = batch.joins.get(entry.table)
    if joins and joins.upserts:
        u = joins.upserts[0]
        return {**u["p"], "_start": u["a"], "_end": u["b"]}
    return None


def _typed_key(node: NodeTable, key: tuple[str, ...]) -> list[Any]:
    return [key_from_text(c, t) for c, t in zip(node.key_column_objs, key, strict=True)]


def _key_map(props: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"{q(p)}: $k[{i}]" for i, p in enumerate(props)) + "}"


def _neo4j_props(driver: Driver, database: str, scope: Scope, identity: tuple[str, ...]) -> dict[str, Any] | None:
    entry = scope.entry
    with driver.session(database=database) as session:
        if isinstance(entry, NodeTable):
            try:
                key = _typed_key(entry, _node_key(scope, identity))
            except ValueError:
                return None
            record = session.run(
                f"MATCH (n:{q(entry.label)} {_key_map(entry.key_props)}) RETURN properties(n) AS p", k=key
            ).single()
            return None if record is None else user_props(record["p"])
        record = session.run(
            f"MATCH (a)-[r:{q(entry.type)} {{_pg2neo_key: $rk}}]->(b) RETURN properties(r) AS p, "
            f"[p IN $ak | a[p]] AS a, [p IN $bk | b[p]] AS b",
            rk=identity[0],
            ak=list(entry.start.key_props),
            bk=list(entry.end.key_props),
        ).single()
        if record is None:
            return None
        return {**user_props(record["p"]), "_start": record["a"], "_end": record["b"]}


def load_conflicts(
    pg_dsn: str, driver: Driver, mapping: Mapping, drifts: list[Drift], database: str = "neo4j"
) -> list[Conflict]:
    by_name = {s.name: s for s in scopes_of(mapping)}
    out: list[Conflict] = []
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        prepare_connection(conn)
        for drift in drifts:
            scope = by_name[drift.scope]
            key = _join_key(drift.identity) if scope.kind == "join" else _node_key(scope, drift.identity)
            readable = key is not None and _valid_key(conn, scope.entry, key)
            pg = _pg_props(conn, mapping, scope.entry, key) if key is not None and readable else None
            neo = _neo4j_props(driver, database, scope, drift.identity)
            out.append(Conflict(drift, scope, pg, neo))
    return out


# -- deciding ------------------------------------------------------------------------------------------------------


def _updated_at(entry: NodeTable | JoinTable) -> str | None:
    if isinstance(entry, NodeTable) and entry.updated_at_column:
        return next((c.prop for c in entry.columns if c.name == entry.updated_at_column), None)
    return None


def _instant(value: Any) -> Any:
    return value.to_native() if isinstance(value, DateTime) else value


def last_write_wins(conflict: Conflict) -> Decision:
    """The newer `updated_at_column` wins; a side without the row (or the column) loses to one that has it,
    except that a row gone from PostgreSQL wins (deletes carry no timestamp, and PostgreSQL is the source)."""
    prop = _updated_at(conflict.scope.entry)
    if prop is None or conflict.pg_row is None or conflict.neo4j_props is None:
        return "pg"
    pg_at, neo_at = _instant(conflict.pg_row.get(prop)), _instant(conflict.neo4j_props.get(prop))
    if neo_at is None:
        return "pg"
    if pg_at is None:
        return "neo4j"
    return "neo4j" if neo_at > pg_at else "pg"


def custom_decider(spec: str) -> Decider:
    """`module:function` -> a decider calling fn(pg_row, neo4j_props, context)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ReconcileError(f"custom policy `{spec}`: write it as custom:module:function")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ReconcileError(f"custom policy `{spec}`: {exc}") from exc

    def decide(conflict: Conflict) -> Decision:
        result = fn(conflict.pg_row, conflict.neo4j_props, conflict.context)
        if result not in ("pg", "neo4j", None):
            raise ReconcileError(f"custom policy `{spec}` returned {result!r}; expected 'pg', 'neo4j' or None")
        return result  # type: ignore[no-any-return]

    return decide


def decider_for(policy: str) -> Decider | None:
    """None for the manual policy (every item becomes a conflicts row)."""
    if policy == "pg-wins":
        return lambda c: "pg"
    if policy == "neo4j-wins":
        return lambda c: "neo4j"
    if policy == "last-write-wins":
        return last_write_wins
    if policy == "manual":
        return None
    if policy.startswith("custom:"):
        return custom_decider(policy[len("custom:") :])
    raise ReconcileError(f"unknown policy `{policy}`: use one of {', '.join(POLICIES)} or custom:module:function")


# -- applying ------------------------------------------------------------------------------------------------------


def _enqueue(conn: psycopg.Connection[Any], items: list[tuple[str, tuple[str, ...]]]) -> None:
    if items:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO pg2neo.changes (tbl, op, key) VALUES (%s, 'U', %s)", [(t, list(k)) for t, k in items]
            )


def _row_key(conflict: Conflict) -> tuple[str, ...] | None:
    if conflict.scope.kind == "join":
        return _join_key(conflict.drift.identity)
    return _node_key(conflict.scope, conflict.drift.identity)


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


def _write_pg(conn: psycopg.Connection[Any], mapping: Mapping, conflict: Conflict) -> None:
    entry = conflict.scope.entry
    key = _row_key(conflict)
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


def _valid_key(conn: psycopg.Connection[Any], entry: NodeTable | JoinTable, key: tuple[str, ...]) -> bool:
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


def _delete_in_graph(driver: Driver, database: str, conflict: Conflict) -> None:
    """An extra item whose key is no row key: nothing in PostgreSQL can ever map to it, so it goes directly."""
    entry = conflict.scope.entry
    identity = conflict.drift.identity
    with driver.session(database=database) as session:
        if isinstance(entry, JoinTable):
            if identity[0].startswith("<no "):
                eid = identity[0].rsplit(": ", 1)[-1].rstrip(">")
                session.run("MATCH ()-[r]->() WHERE elementId(r) = $eid DELETE r", eid=eid).consume()
            else:
                session.run(f"MATCH ()-[r:{q(entry.type)} {{_pg2neo_key: $rk}}]->() DELETE r", rk=identity[0]).consume()
            return
        key = list(identity[: len(entry.key_props)])
        session.run(
            f"MATCH (n:{q(entry.label)}) WHERE [p IN $props | toString(n[p])] = $k DETACH DELETE n",
            props=list(entry.key_props),
            k=key,
        ).consume()


def apply_decisions(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    conflicts: list[Conflict],
    drain: Callable[[], None],
    database: str = "neo4j",
) -> tuple[int, int, list[str]]:
    """Carry out the decided items; returns (rewritten in Neo4j, rewritten in PostgreSQL, errors)."""
    to_neo4j = to_pg = 0
    errors: list[str] = []
    queue: list[tuple[str, tuple[str, ...]]] = []
    # Rows before relationships; of a re-pointed foreign key, the new target ("extra") before the old one.
    ordered = sorted(conflicts, key=lambda c: (c.scope.kind != "node", c.drift.kind != "extra"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        prepare_connection(conn)
        for c in ordered:
            key = _row_key(c)
            if c.decision == "pg":
                if key is None or not _valid_key(conn, c.scope.entry, key):
                    _delete_in_graph(driver, database, c)
                else:
                    queue.append((c.scope.entry.table, key))
                to_neo4j += 1
            elif c.decision == "neo4j":
                if (
                    c.scope.kind == "fk"
                    and c.drift.kind == "missing"
                    and any(
                        o.drift.scope == c.drift.scope
                        and o.drift.kind == "extra"
                        and o.drift.identity[: len(c.scope.entry.key_columns)] == key
                        for o in ordered
                    )
                ):
                    continue  # re-pointed: the extra one already set the column
                try:
                    with conn.transaction():
                        mark_own_write(conn)
                        _write_pg(conn, mapping, c)
                except psycopg.Error as exc:
                    errors.append(f"{c.drift.scope} {list(c.drift.identity)}: {str(exc).strip()}")
                    continue
                if key is not None:
                    queue.append((c.scope.entry.table, key))
                to_pg += 1
        _enqueue(conn, list(dict.fromkeys(queue)))
    drain()
    return to_neo4j, to_pg, errors


# -- manual: settling one recorded conflict --------------------------------------------------------------------------


def resolve_conflict(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    conflict_id: int,
    take: str,
    drain: Callable[[], None],
    database: str = "neo4j",
) -> Conflict:
    """Settle one recorded conflict with the side's *current* state, then mark it resolved."""
    if take not in ("pg", "neo4j"):
        raise ReconcileError("--take must be pg or neo4j")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = get_conflict(conn, conflict_id)
        if row is None:
            raise ReconcileError(f"no conflict with id {conflict_id}")
        if row["resolved_at"] is not None:
            raise ReconcileError(f"conflict {conflict_id} was already resolved ({row['resolution']})")
    drift = Drift(row["scope"], row["kind"], tuple(row["identity"]))
    (conflict,) = load_conflicts(pg_dsn, driver, mapping, [drift], database)
    conflict.decision = take
    _, _, errors = apply_decisions(pg_dsn, driver, mapping, [conflict], drain, database)
    (after,) = load_conflicts(pg_dsn, driver, mapping, [drift], database)
    if not settled(after):
        errors.append(
            f"{drift.scope} {list(drift.identity)}: PostgreSQL and Neo4j still differ after taking {take}; the repair "
            "did not take effect (see the service log for `version_guard_refused`), or the row changed meanwhile"
        )
    if errors:
        raise ReconcileError("; ".join(errors))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE pg2neo.conflicts SET resolved_at = now(), resolution = %s WHERE id = %s", (take, conflict_id)
        )
    return conflict


def settled(conflict: Conflict) -> bool:
    """Whether both sides of a node or join-table item now hold the same state (both gone counts). A foreign-key
    item is not compared here: its row's node is, and `reconcile --apply` verifies it."""
    if conflict.scope.kind == "fk":
        return True
    if conflict.pg_row is None or conflict.neo4j_props is None:
        return conflict.pg_row is None and conflict.neo4j_props is None
    return props_hash(conflict.pg_row) == props_hash(conflict.neo4j_props)


# -- the whole run -------------------------------------------------------------------------------------------------


def reconcile(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    drifts: list[Drift],
    policy: str,
    drain: Callable[[], None],
    apply: bool = False,
    database: str = "neo4j",
) -> RepairResult:
    """Decide every drift item by `policy`; with apply, carry the decisions out (else only report them)."""
    decide = decider_for(policy)
    conflicts = load_conflicts(pg_dsn, driver, mapping, drifts, database)
    for c in conflicts:
        c.decision = None if decide is None else decide(c)
    result = RepairResult(conflicts, applied=apply)
    if not apply:
        return result
    if decide is None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            result.conflicts_recorded = record_conflicts(conn, conflicts)
        return result
    decided = [c for c in conflicts if c.decision]
    result.to_neo4j, result.to_pg, result.errors = apply_decisions(pg_dsn, driver, mapping, decided, drain, database)
    result.errors += unsettled(pg_dsn, driver, mapping, decided, database)
    return result


def unsettled(
    pg_dsn: str, driver: Driver, mapping: Mapping, decided: list[Conflict], database: str = "neo4j"
) -> list[str]:
    """The decided items that still differ once the repair ran: a repair that did not take effect (a write the
    graph refused, a row changed meanwhile) is reported, never counted as done."""
    if not decided:
        return []
    left = {(d.scope, d.identity): d.kind for d in verify(pg_dsn, driver, mapping, database).drifts}
    errors = []
    for c in decided:
        kind = left.get((c.drift.scope, c.drift.identity))
        if kind is not None:
            errors.append(
                f"{c.drift.scope} {list(c.drift.identity)}: still {kind} after the repair; it did not take effect "
                "(see the service log for `version_guard_refused`), or the row changed meanwhile: run "
                "`pg2neo verify` again"
            )
    return errors
