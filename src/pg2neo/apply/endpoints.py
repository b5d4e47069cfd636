"""Relationships whose end node may not exist yet (the Kafka sink's writes; see "awaiting endpoints" in cypher.py).

For a mapping, this module knows each relationship definition's statements and how each end is found (`Lookup`),
and makes the tokens that pair a pending relationship with the node it waits for: the node's label, the identifying
properties' names and their values, as one string computed the same way from both sides (the relationship's row and
the node's upsert), so one indexed equality finds them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pg2neo.apply.cypher import (
    FORGET_OWNED,
    PENDING_INDEXES,
    TRUNCATE_MARK,
    TRUNCATE_PENDING,
    TRUNCATED_CONSTRAINT,
    AwaitingJoin,
    AwaitingLink,
    Lookup,
    awaiting_join_statements,
    awaiting_link_statements,
    awaiting_node_delete,
    awaiting_node_lock,
    awaiting_node_upsert,
    awaiting_truncate,
    join_statements,
    lookup_index,
    sweep_statement,
)
from pg2neo.errors import MappingError
from pg2neo.mapping.plan import Endpoint, ForeignKeyRel, JoinTable, Mapping, NodeTable


def _canonical(value: Any) -> Any:
    to_native = getattr(value, "to_native", None)  # a value read back from Neo4j
    if callable(to_native):
        value = to_native()
    if isinstance(value, bytes | bytearray):
        return "b:" + bytes(value).hex()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | Decimal):
        return "n:" + repr(value)
    if isinstance(value, dt.date | dt.time):
        return "t:" + value.isoformat()
    return f"{type(value).__name__}:{value}"


def token(label: str, props: tuple[str, ...], values: list[Any]) -> str:
    """The string that names one node by label and identifying values (equal values give equal tokens)."""
    return json.dumps([label, list(props), [_canonical(v) for v in values]], ensure_ascii=False, separators=(",", ":"))


def lookup_of(mapping: Mapping, table: str, ref_columns: tuple[str, ...], needs_join: bool) -> Lookup:
    """How a foreign key finds its target node from the row's own values: by the node key when it references the
    key columns, else by the properties of the referenced columns (which the target must map)."""
    target = mapping.node(table)
    if not needs_join:
        return Lookup(target.label, target.key_props)
    by_name = {c.name: c.prop for c in target.columns}
    missing = [c for c in ref_columns if c not in by_name]
    if missing:
        raise MappingError(
            f"a relationship to `{target.label}` references {list(ref_columns)} of {target.table}, which is not the "
            f"node key, and the node does not map {missing}: a Debezium event carries only the referenced values, so "
            f"add {missing} to the `{target.table}` node's columns in the mapping (or reference its key columns)"
        )
    return Lookup(target.label, tuple(by_name[c] for c in ref_columns))


@dataclass(frozen=True)
class LinkPlan:
    definition: str
    owner_table: str
    rel: ForeignKeyRel
    target: Lookup
    statements: AwaitingLink


@dataclass(frozen=True)
class JoinPlan:
    definition: str
    table: JoinTable
    start: Lookup
    end: Lookup
    statements: AwaitingJoin


@dataclass(frozen=True)
class Incoming:
    """The relationships of one definition that end at nodes of a label about to be deleted: they wait for the node
    to come back (a key change, or a row deleted and inserted again) instead of going with it."""

    definition: str
    statement: str
    link: LinkPlan | None = None
    join: JoinPlan | None = None
    side: str = ""  # for a join: which end the deleted node is


@dataclass(frozen=True)
class Resolver:
    """A statement that turns the pending relationships of one definition into relationships, given the tokens of
    nodes just upserted under `lookup`."""

    definition: str
    lookup: Lookup
    statement: str


class Awaiting:
    """The awaiting-endpoint statements of one mapping."""

    def __init__(self, mapping: Mapping) -> None:
        self.links: dict[str, list[LinkPlan]] = {}
        self.joins: dict[str, JoinPlan] = {}
        # Rows carry their own versions ("v"): the node upserts and join clears are the plain ones, guarded by r.v.
        self.deletes: dict[str, str] = {n.table: awaiting_node_delete(n) for n in mapping.nodes}
        self.locks: dict[str, str] = {n.table: awaiting_node_lock(n) for n in mapping.nodes}
        self.upserts: dict[str, str] = {n.table: awaiting_node_upsert(n) for n in mapping.nodes}
        self.clears: dict[str, str] = {j.table: join_statements(j, "r.v").clear for j in mapping.joins}
        self.resolvers: dict[str, list[Resolver]] = {}  # by node label
        self.incoming: dict[str, list[Incoming]] = {}  # by node label
        self.resolve_statement: dict[str, str] = {}  # by definition
        self.sweeps: dict[str, str] = {}  # by definition
        self.forget_owned = FORGET_OWNED
        for node in mapping.nodes:
            plans = []
            for index, rel in enumerate(node.fk_rels):
                target = lookup_of(mapping, rel.target_table, rel.ref_columns, rel.needs_join)
                name = f"fk:{node.table}:{index}"
                plan = LinkPlan(name, node.table, rel, target, awaiting_link_statements(node, rel, target))
                plans.append(plan)
                self._resolver(Resolver(name, target, plan.statements.resolve))
                incoming = Incoming(name, plan.statements.incoming, link=plan)
                self.incoming.setdefault(rel.target_label, []).append(incoming)
            self.links[node.table] = plans
        for join in mapping.joins:
            start, end = (_end_lookup(mapping, e) for e in (join.start, join.end))
            name = f"join:{join.table}"
            jplan = JoinPlan(name, join, start, end, awaiting_join_statements(join, start, end))
            self.joins[join.table] = jplan
            self._resolver(Resolver(name, start, jplan.statements.resolve))
            for side, label, statement in (
                ("start", join.start.label, jplan.statements.incoming_start),
                ("end", join.end.label, jplan.statements.incoming_end),
            ):
                self.incoming.setdefault(label, []).append(Incoming(name, statement, join=jplan, side=side))
            if end != start:
                self._resolver(Resolver(name, end, jplan.statements.resolve))
        self.owners = {n.table for n in mapping.nodes if n.fk_rels}
        self._labels_key = {n.table: (n.label, n.key_props) for n in mapping.nodes}
        self.truncate_mark = TRUNCATE_MARK
        self.truncate_pending = TRUNCATE_PENDING
        self.truncates: dict[str, tuple[str, str, str]] = {}  # table -> (cut name, statement, pending prefix)
        for node in mapping.nodes:
            self.truncates[node.table] = (node.label, awaiting_truncate(node), f"fk:{node.table}:")
        for join in mapping.joins:
            self.truncates[join.table] = (join.type, awaiting_truncate(join), f"join:{join.table}")

    def _resolver(self, resolver: Resolver) -> None:
        self.resolvers.setdefault(resolver.lookup.label, []).append(resolver)
        self.resolve_statement[resolver.definition] = resolver.statement
        self.sweeps[resolver.definition] = sweep_statement(resolver.statement)

    def schema_statements(self, mapping: Mapping) -> list[str]:
        """Indexes for the pending relationships and for lookups by non-key properties."""
        keyed = {(n.label, n.key_props) for n in mapping.nodes}
        lookups = {r.lookup for rs in self.resolvers.values() for r in rs}
        indexes = sorted(lookup_index(lookup) for lookup in lookups if (lookup.label, lookup.props) not in keyed)
        return [*PENDING_INDEXES, TRUNCATED_CONSTRAINT, *indexes]

    # -- rows with their tokens -----------------------------------------------------------------------------------
    def upsert_tokens(self, node: NodeTable, upserts: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Per resolver definition, the tokens of these upserted nodes under that resolver's lookup."""
        out: dict[str, list[str]] = {}
        for resolver in self.resolvers.get(node.label, []):
            lookup = resolver.lookup
            tokens = out.setdefault(resolver.definition, [])
            for upsert in upserts:
                props = upsert["p"]
                if all(p in props for p in lookup.props):
                    tokens.append(token(lookup.label, lookup.props, [props[p] for p in lookup.props]))
        return out

    def wait_statement(self, incoming: Incoming) -> str:
        if incoming.link is not None:
            return incoming.link.statements.wait
        assert incoming.join is not None
        return incoming.join.statements.wait

    def waiting_rows(self, incoming: Incoming, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        """Pending rows (for the definition's `wait` statement) from the relationships `incoming` read, and the
        tokens they wait for."""
        rows: list[dict[str, Any]] = []
        if incoming.link is not None:
            plan = incoming.link
            owner = self._labels_key[plan.owner_table]
            for record in records:
                wait = token(plan.target.label, plan.target.props, record["b"])
                rows.append(
                    {
                        "o": token(*owner, record["a"]),
                        "w": wait,
                        "v": record["v"] or 0,
                        "k": record["a"],
                        "t": record["b"],
                    }
                )
        elif incoming.join is not None:
            jplan = incoming.join
            for record in records:
                aw = token(jplan.start.label, jplan.start.props, record["a"])
                bw = token(jplan.end.label, jplan.end.props, record["b"])
                rows.append(
                    {
                        "key": record["key"],
                        "v": record["v"] or 0,
                        "a": record["a"],
                        "b": record["b"],
                        "aw": aw,
                        "bw": bw,
                        "w": aw if incoming.side == "start" else bw,
                        "p": record["p"],
                    }
                )
        return rows, [row["w"] for row in rows]

    def owner_token(self, node: NodeTable, key: list[Any]) -> str:
        return token(node.label, node.key_props, key)

    def link_rows(self, node: NodeTable, plan: LinkPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            target = row["t"]
            wait = None if target is None else token(plan.target.label, plan.target.props, target)
            out.append({**row, "o": self.owner_token(node, row["k"]), "w": wait})
        return out

    def join_rows(self, plan: JoinPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                **row,
                "aw": token(plan.start.label, plan.start.props, row["a"]),
                "bw": token(plan.end.label, plan.end.props, row["b"]),
            }
            for row in rows
        ]


def _end_lookup(mapping: Mapping, end: Endpoint) -> Lookup:
    return lookup_of(mapping, end.table, end.ref_columns, end.needs_join)
