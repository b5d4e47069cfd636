"""From rows read in PostgreSQL to the graph writes of one batch (pure: no server is touched here).

A row read for a key is an upsert; a queued key whose row is gone is a delete. A value Neo4j cannot store makes
the whole row a dead letter (`RowFailure`), never a silent drop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pg2neo.apply.cypher import HASH_PROP
from pg2neo.mapping.convert import UnstorableRow, UnstorableValue, converter, key_from_text, row_converter
from pg2neo.mapping.hashing import props_hash_hex
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable


def rel_key(key: Sequence[str]) -> str:
    """The `_pg2neo_key` of a join-table relationship: its row key, as a JSON array of texts."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


@dataclass
class NodeWrites:
    table: NodeTable
    upserts: list[dict[str, Any]] = field(default_factory=list)  # {"k": [key...], "p": {props}}
    deletes: list[list[Any]] = field(default_factory=list)
    # per foreign-key relationship (index into table.fk_rels): {"k": [key...], "t": [target key...] | None}
    links: list[list[dict[str, Any]]] = field(default_factory=list)


@dataclass
class JoinWrites:
    table: JoinTable
    upserts: list[dict[str, Any]] = field(default_factory=list)  # {"key", "a", "b", "p"}
    deletes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RowFailure:
    table: str
    key: tuple[str, ...]
    reason: str
    payload: dict[str, Any]


@dataclass
class GraphBatch:
    nodes: dict[str, NodeWrites] = field(default_factory=dict)
    joins: dict[str, JoinWrites] = field(default_factory=dict)
    failures: list[RowFailure] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.nodes.values():
            if w.upserts:
                out[f"{w.table.label}:upsert"] = len(w.upserts)
            if w.deletes:
                out[f"{w.table.label}:delete"] = len(w.deletes)
        for j in self.joins.values():
            if j.upserts:
                out[f"{j.table.type}:upsert"] = len(j.upserts)
            if j.deletes:
                out[f"{j.table.type}:delete"] = len(j.deletes)
        if self.failures:
            out["dead_letters"] = len(self.failures)
        return out

    def empty(self) -> bool:
        return not self.nodes and not self.joins


def _key_converter(entry: NodeTable) -> Callable[[tuple[Any, ...]], list[Any]]:
    fns = [converter(c) for c in entry.key_column_objs]

    def convert(values: tuple[Any, ...]) -> list[Any]:
        return [fn(v) for fn, v in zip(fns, values, strict=True)]

    return convert


class BatchBuilder:
    """Turns rows (as the reader selects them) into one `GraphBatch`; built once per mapping, reused per batch."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self._node_plans: dict[str, Any] = {}
        for node in mapping.nodes:
            targets = [(_key_converter(mapping.node(r.target_table)), len(r.target_key_props)) for r in node.fk_rels]
            self._node_plans[node.table] = (row_converter(node.columns), targets)
        for join in mapping.joins:
            ends = [(_key_converter(mapping.node(e.table)), len(e.key_props)) for e in (join.start, join.end)]
            self._node_plans[join.table] = (row_converter(join.columns), ends)

    def new_batch(self) -> GraphBatch:
        return GraphBatch()

    def add_rows(self, batch: GraphBatch, entry: NodeTable | JoinTable, rows: Iterable[tuple[Any, ...]]) -> None:
        """Map rows to writes. A row that fails anywhere on the way (conversion, its links' keys, its hash) becomes
        a `RowFailure` naming every bad column, whatever the exception: one row never stops its batch."""
        convert, targets = self._node_plans[entry.table]
        width = len(entry.columns)
        for row in rows:
            key = tuple(row[0])
            values = row[1 : 1 + width]
            try:
                props = convert(values)
                links: list[list[Any] | None] = []
                at = 1 + width
                for key_convert, size in targets:
                    part = row[at : at + size]
                    at += size
                    links.append(None if any(v is None for v in part) else key_convert(part))
                if isinstance(entry, NodeTable):
                    self._node_upsert(batch, entry, props, links)
                else:
                    self._join_upsert(batch, entry, key, props, links)
            except Exception as exc:  # isolated to this row, with its reason
                batch.failures.append(RowFailure(entry.table, key, _reason(exc), row_payload(entry, values)))

    def _node_upsert(
        self, batch: GraphBatch, entry: NodeTable, props: dict[str, Any], links: list[list[Any] | None]
    ) -> None:
        node_key = [props[p] for p in entry.key_props]
        upsert = {"k": node_key, "p": {**props, HASH_PROP: props_hash_hex(props)}}
        writes = batch.nodes.get(entry.table)
        if writes is None:
            writes = batch.nodes[entry.table] = NodeWrites(entry, links=[[] for _ in entry.fk_rels])
        writes.upserts.append(upsert)
        for index, target in enumerate(links):
            writes.links[index].append({"k": node_key, "t": target})

    def _join_upsert(
        self,
        batch: GraphBatch,
        entry: JoinTable,
        key: tuple[str, ...],
        props: dict[str, Any],
        links: list[list[Any] | None],
    ) -> None:
        writes = batch.joins.get(entry.table)
        if writes is None:
            writes = batch.joins[entry.table] = JoinWrites(entry)
        rk = rel_key(key)
        start, end = links
        if start is None or end is None:
            # An endpoint column is NULL: the row draws no relationship (and any earlier one goes).
            writes.deletes.append(rk)
            return
        writes.upserts.append({"key": rk, "a": start, "b": end, "p": {p: props[p] for p in entry.props if p in props}})

    def add_deletes(self, batch: GraphBatch, entry: NodeTable | JoinTable, keys: Iterable[tuple[str, ...]]) -> None:
        """Queued keys whose rows are gone. Node keys arrive as text and are converted like the key columns."""
        if isinstance(entry, JoinTable):
            writes = batch.joins.get(entry.table)
            if writes is None:
                writes = batch.joins[entry.table] = JoinWrites(entry)
            writes.deletes.extend(rel_key(k) for k in keys)
            return
        node_writes = batch.nodes.get(entry.table)
        if node_writes is None:
            node_writes = batch.nodes[entry.table] = NodeWrites(entry, links=[[] for _ in entry.fk_rels])
        key_columns = entry.key_column_objs
        for key in keys:
            try:
                node_writes.deletes.append([key_from_text(c, t) for c, t in zip(key_columns, key, strict=True)])
            except Exception as exc:  # a key that cannot be converted is this key's dead letter
                batch.failures.append(RowFailure(entry.table, key, _reason(exc), {}))


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnstorableRow | UnstorableValue):
        return str(exc)
    return f"the row cannot be mapped ({type(exc).__name__}: {exc})"


def row_payload(entry: NodeTable | JoinTable, values: tuple[Any, ...]) -> dict[str, Any]:
    return {c.name: (None if v is None else str(v)[:10_000]) for c, v in zip(entry.columns, values, strict=True)}
