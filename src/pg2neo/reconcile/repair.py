"""`pg2neo reconcile`: settle the drift `verify` found, by policy (the last step of the reconcile stage).

Each drift item is loaded with both sides (`sides`) and given a decision (`policies`):
- "pg" re-uses the apply engine: the item's row key is queued in `pg2neo.changes` and an `Engine` drains the queue
  with a fresh epoch under the apply lock (a key whose row is gone deletes the node or relationship).
- "neo4j" writes the row in PostgreSQL (`writeback`) in a transaction with `SET LOCAL pg2neo.origin = 'pg2neo'`, so
  the capture triggers do not queue it; the same keys are then re-applied by the engine once, so that what the
  write changed besides the mapped values (a version column bumped by a trigger) reaches the graph as well.
- none: left alone, or recorded in `pg2neo.conflicts` by the manual policy, for a person to settle one by one
  (`resolve_and_record`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from neo4j import Driver

from pg2neo.apply.engine import Engine
from pg2neo.capture.session import prepare_connection
from pg2neo.errors import ReconcileError
from pg2neo.mapping.hashing import props_hash
from pg2neo.mapping.plan import Mapping
from pg2neo.reconcile.policies import Conflict, decider_for
from pg2neo.reconcile.sides import load_conflicts, row_key, valid_key
from pg2neo.reconcile.verify import Drift, verify
from pg2neo.reconcile.writeback import delete_in_graph, write_pg
from pg2neo.settings import ApplySettings
from pg2neo.transport.conflicts import get_conflict, mark_resolved, record_conflict, record_resolution
from pg2neo.transport.queue import enqueue_updates
from pg2neo.transport.schema import mark_own_write


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


def _drain(pg_dsn: str, driver: Driver, mapping: Mapping, database: str) -> None:
    """Apply the queue (the keys just enqueued among it) through the engine, under the apply lock."""
    engine = Engine(pg_dsn, driver, mapping, ApplySettings(), database)
    try:
        engine.drain()
    finally:
        engine.close()


def _repointed(c: Conflict, key: tuple[str, ...] | None, ordered: list[Conflict]) -> bool:
    """A missing foreign-key relationship whose row has an extra one in the same scope: the extra one sets it."""
    return (
        c.scope.kind == "fk"
        and c.drift.kind == "missing"
        and any(
            o.drift.scope == c.drift.scope
            and o.drift.kind == "extra"
            and o.drift.identity[: len(c.scope.entry.key_columns)] == key
            for o in ordered
        )
    )


def apply_decisions(
    pg_dsn: str, driver: Driver, mapping: Mapping, conflicts: list[Conflict], database: str = "neo4j"
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
            key = row_key(c)
            if c.decision == "pg":
                if key is None or not valid_key(conn, c.scope.entry, key):
                    delete_in_graph(driver, database, c)
                else:
                    queue.append((c.scope.entry.table, key))
                to_neo4j += 1
            elif c.decision == "neo4j":
                if _repointed(c, key, ordered):
                    continue  # re-pointed: the extra one already set the column
                try:
                    with conn.transaction():
                        mark_own_write(conn)
                        write_pg(conn, mapping, c)
                except psycopg.Error as exc:
                    errors.append(f"{c.drift.scope} {list(c.drift.identity)}: {str(exc).strip()}")
                    continue
                if key is not None:
                    queue.append((c.scope.entry.table, key))
                to_pg += 1
        if queue:
            enqueue_updates(conn, list(dict.fromkeys(queue)))
    _drain(pg_dsn, driver, mapping, database)
    return to_neo4j, to_pg, errors


def settled(conflict: Conflict) -> bool:
    """Whether both sides of a node or join-table item now hold the same state (both gone counts). A foreign-key
    item is not compared here: its row's node is, and `reconcile --apply` verifies it."""
    if conflict.scope.kind == "fk":
        return True
    if conflict.pg_row is None or conflict.neo4j_props is None:
        return conflict.pg_row is None and conflict.neo4j_props is None
    return props_hash(conflict.pg_row) == props_hash(conflict.neo4j_props)


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


def reconcile(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    drifts: list[Drift],
    policy: str,
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
            result.conflicts_recorded = sum(
                record_conflict(conn, c.drift.scope, c.drift.kind, c.drift.identity, c.pg_row, c.neo4j_props)
                for c in conflicts
            )
        return result
    decided = [c for c in conflicts if c.decision]
    result.to_neo4j, result.to_pg, result.errors = apply_decisions(pg_dsn, driver, mapping, decided, database)
    result.errors += unsettled(pg_dsn, driver, mapping, decided, database)
    return result


# -- manual: settling one recorded conflict --------------------------------------------------------------------------


def resolve_conflict(
    pg_dsn: str, driver: Driver, mapping: Mapping, conflict_id: int, take: str, database: str = "neo4j"
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
    _, _, errors = apply_decisions(pg_dsn, driver, mapping, [conflict], database)
    (after,) = load_conflicts(pg_dsn, driver, mapping, [drift], database)
    if not settled(after):
        errors.append(
            f"{drift.scope} {list(drift.identity)}: PostgreSQL and Neo4j still differ after taking {take}; the repair "
            "did not take effect (see the service log for `version_guard_refused`), or the row changed meanwhile"
        )
    if errors:
        raise ReconcileError("; ".join(errors))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        mark_resolved(conn, conflict_id, take)
    return conflict


def resolve_and_record(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    conflict_id: int,
    take: str,
    database: str = "neo4j",
    by: str = "cli",
) -> Conflict:
    """Settle one conflict with the chosen side's current state (`resolve_conflict`), then record the resolution in
    the audit trail (`record_resolution`). `by` says who resolved it: "cli", "console"."""
    started = time.monotonic()
    conflict = resolve_conflict(pg_dsn, driver, mapping, conflict_id, take, database)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        record_resolution(conn, conflict_id, take, by, time.monotonic() - started)
    return conflict
