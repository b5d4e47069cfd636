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
    # With rows that carry their own versions (`add_rows(..., versions)`): each row dict has "v", and these are
    # the deletes' versions, in the order of `deletes`.
    delete_versions: list[int] = field(default_factory=list)


@dataclass
class JoinWrites:
    table: JoinTable
    upserts: list[dict[str, Any]] = field(default_factory=list)  # {"key", "a", "b", "p"}
    deletes: list[str] = field(default_factory=list)
    delete_versions: list[int] = field(default_factory=list)


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


def _key_converter(entry: NodeTable, names: tuple[str, ...] | None = None) -> Callable[[tuple[Any, ...]], list[Any]]:
    """Converts the values that identify a target node: its key columns, or the columns `names` (what a foreign key
    references, when the row carries those instead of the target's key)."""
    by_name = {c.name: c for c in entry.columns}
    fns = [converter(c) for c in entry.key_column_objs] if names is None else [converter(by_name[n]) for n in names]

    def convert(values: tuple[Any, ...]) -> list[Any]:
        return [fn(v) for fn, v in zip(fns, values, strict=True)]

    return convert


class BatchBuilder:
    """Turns rows (as the reader selects them) into one `GraphBatch`; built once per mapping, reused per batch.

    The reader joins a foreign key to its target and selects the target's node key; a row that arrives whole from
    elsewhere (a Debezium event) carries only the referenced columns: `by_reference` converts those instead (with the
    target's converters for them), and the writer then finds the target by those properties."""

    def __init__(self, mapping: Mapping, by_reference: bool = False) -> None:
        self.mapping = mapping
        self._node_plans: dict[str, Any] = {}

        def target(table: str, ref_columns: tuple[str, ...], needs_join: bool) -> tuple[Any, int]:
            node = mapping.node(table)
            if by_reference and needs_join:
                return _key_converter(node, ref_columns), len(ref_columns)
            return _key_converter(node), len(node.key_props)

        for node in mapping.nodes:
            targets = [target(r.target_table, r.ref_columns, r.needs_join) for r in node.fk_rels]
            self._node_plans[node.table] = (row_converter(node.columns), targets)
        for join in mapping.joins:
            ends = [target(e.table, e.ref_columns, e.needs_join) for e in (join.start, join.end)]
            self._node_plans[join.table] = (row_converter(join.columns), ends)

    def key_values(self, entry: NodeTable, row: tuple[Any, ...]) -> list[Any] | None:
        """The node key of a row (as the reader selects it), converted; None when it cannot be."""
        by_name = {c.name: i for i, c in enumerate(entry.columns)}
        try:
            return [converter(c)(row[1 + by_name[c.name]]) for c in entry.key_column_objs]
        except Exception:  # the row's own write will say why
            return None

    def new_batch(self) -> GraphBatch:
        return GraphBatch()

    def add_rows(
        self,
        batch: GraphBatch,
        entry: NodeTable | JoinTable,
        rows: Iterable[tuple[Any, ...]],
        versions: Sequence[int] | None = None,
    ) -> None:
        """Map rows to writes. A row that fails anywhere on the way (conversion, its links' keys, its hash) becomes
        a `RowFailure` naming every bad column, whatever the exception: one row never stops its batch. With
        `versions` (one per row), every write of a row carries its version as "v"."""
        convert, targets = self._node_plans[entry.table]
        width = len(entry.columns)
        for index, row in enumerate(rows):
            version = None if versions is None else versions[index]
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
                    self._node_upsert(batch, entry, props, links, version)
                else:
                    self._join_upsert(batch, entry, key, props, links, version)
            except Exception as exc:  # isolated to this row, with its reason
                batch.failures.append(RowFailure(entry.table, key, _reason(exc), row_payload(entry, values)))

    def _node_upsert(
        self,
        batch: GraphBatch,
        entry: NodeTable,
        props: dict[str, Any],
        links: list[list[Any] | None],
        version: int | None = None,
    ) -> None:
        node_key = [props[p] for p in entry.key_props]
        upsert = {"k": node_key, "p": {**props, HASH_PROP: props_hash_hex(props)}}
        writes = batch.nodes.get(entry.table)
        if writes is None:
            writes = batch.nodes[entry.table] = NodeWrites(entry, links=[[] for _ in entry.fk_rels])
        if version is None:
            writes.upserts.append(upsert)
            for index, target in enumerate(links):
                writes.links[index].append({"k": node_key, "t": target})
            return
        writes.upserts.append({**upsert, "v": version})
        for index, target in enumerate(links):
            writes.links[index].append({"k": node_key, "t": target, "v": version})

    def _join_upsert(
        self,
        batch: GraphBatch,
        entry: JoinTable,
        key: tuple[str, ...],
        props: dict[str, Any],
        links: list[list[Any] | None],
        version: int | None = None,
    ) -> None:
        writes = batch.joins.get(entry.table)
        if writes is None:
            writes = batch.joins[entry.table] = JoinWrites(entry)
        rk = rel_key(key)
        start, end = links
        if start is None or end is None:
            # An endpoint column is NULL: the row draws no relationship (and any earlier one goes).
            writes.deletes.append(rk)
            if version is not None:
                writes.delete_versions.append(version)
            return
        upsert = {"key": rk, "a": start, "b": end, "p": {p: props[p] for p in entry.props if p in props}}
        writes.upserts.append(upsert if version is None else {**upsert, "v": version})

    def add_deletes(
        self,
        batch: GraphBatch,
        entry: NodeTable | JoinTable,
        keys: Iterable[tuple[str, ...]],
        versions: Sequence[int] | None = None,
    ) -> None:
        """Queued keys whose rows are gone. Node keys arrive as text and are converted like the key columns. With
        `versions`, one per key, as in `add_rows`."""
        if isinstance(entry, JoinTable):
            writes = batch.joins.get(entry.table)
            if writes is None:
                writes = batch.joins[entry.table] = JoinWrites(entry)
            writes.deletes.extend(rel_key(k) for k in keys)
            if versions is not None:
                writes.delete_versions.extend(versions)
            return
        node_writes = batch.nodes.get(entry.table)
        if node_writes is None:
            node_writes = batch.nodes[entry.table] = NodeWrites(entry, links=[[] for _ in entry.fk_rels])
        key_columns = entry.key_column_objs
        for index, key in enumerate(keys):
            try:
                converted = [key_from_text(c, t) for c, t in zip(key_columns, key, strict=True)]
            except Exception as exc:  # a key that cannot be converted is this key's dead letter
                batch.failures.append(RowFailure(entry.table, key, _reason(exc), {}))
                continue
            node_writes.deletes.append(converted)
            if versions is not None:
                node_writes.delete_versions.append(versions[index])


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnstorableRow | UnstorableValue):
        return str(exc)
    return f"the row cannot be mapped ({type(exc).__name__}: {exc})"


def row_payload(entry: NodeTable | JoinTable, values: tuple[Any, ...]) -> dict[str, Any]:
    return {c.name: (None if v is None else str(v)[:10_000]) for c, v in zip(entry.columns, values, strict=True)}
