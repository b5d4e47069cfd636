"""Repair policies: what one drift item becomes, "pg" (Neo4j is rewritten from PostgreSQL), "neo4j" (PostgreSQL is
rewritten from the graph) or None (left alone, or recorded in `pg2neo.conflicts` by the manual policy).

`Conflict` is one drift item with both sides' current state (loaded by `sides.load_conflicts`); a decider looks at
it and returns the decision. Pure: no server is touched here (a custom policy's function aside).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from neo4j.time import DateTime

from pg2neo.errors import ReconcileError
from pg2neo.mapping.plan import JoinTable, NodeTable
from pg2neo.reconcile.verify import Drift, Scope

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
