"""`pg2neo verify`: scan PostgreSQL and Neo4j, compare content hashes, report drift (the reconcile stage's input).

Each mapped label, foreign-key relationship and join-table relationship is one *scope*. Both sides stream their
items (PostgreSQL through a server-side cursor read with the apply stage's reader and converters; Neo4j as one
lazily fetched Cypher result) and fold them into per-bucket digests (count and sum of item hashes, the bucket
chosen by the item's identity): memory is the bucket arrays, not the table. Only buckets whose digests differ are
scanned again, this time keeping identity -> hash for the rows of those buckets, and compared item by item.

An item's hash covers its identity and its mapped values as Neo4j holds them: on the Neo4j side the properties
read back (never the stored `_pg2neo_hash`), so a tampered property is found.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from neo4j import Driver

from pg2neo.apply.batch import BatchBuilder
from pg2neo.apply.cypher import REL_KEY, fk_items_query, graph_props, join_items_query, node_items_query
from pg2neo.apply.reader import page_query
from pg2neo.capture.session import prepare_connection
from pg2neo.mapping.hashing import MASK, bucket_of, digest, key_text, props_hash
from pg2neo.mapping.plan import ForeignKeyRel, JoinTable, Mapping, NodeTable

KINDS = ("missing", "extra", "mismatch")
FETCH_ROWS = 5000


@dataclass(frozen=True)
class Scope:
    """One comparable set: a node label of a table, one foreign-key relationship, or one join table's type."""

    name: str
    kind: str  # node | fk | join
    entry: NodeTable | JoinTable
    rel: ForeignKeyRel | None = None
    rel_index: int = -1

    @property
    def is_node(self) -> bool:
        return self.kind == "node"


def scopes_of(mapping: Mapping) -> list[Scope]:
    out: list[Scope] = []
    for node in mapping.nodes:
        out.append(Scope(f":{node.label}", "node", node))
        for index, rel in enumerate(node.fk_rels):
            arrow = f"-[:{rel.type}]->" if rel.direction == "out" else f"<-[:{rel.type}]-"
            out.append(Scope(f"(:{node.label}){arrow}(:{rel.target_label})", "fk", node, rel, index))
    for join in mapping.joins:
        out.append(Scope(f"(:{join.start.label})-[:{join.type}]->(:{join.end.label})", "join", join))
    return out


@dataclass(frozen=True)
class Drift:
    scope: str
    kind: str  # missing (in Neo4j) | extra (in Neo4j) | mismatch
    identity: tuple[str, ...]


@dataclass
class ScopeReport:
    scope: str
    kind: str
    pg_items: int = 0
    neo4j_items: int = 0
    buckets: int = 0
    differing_buckets: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    samples: dict[str, list[list[str]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    # Further PostgreSQL rows whose node key (or relationship key) equals an earlier row's: Neo4j can hold only one
    # item for them, so rows were merged. Validation refuses the mappings known to do this; this is the net under it.
    collisions: int = 0
    collision_samples: list[list[str]] = field(default_factory=list)


@dataclass
class VerifyReport:
    scopes: list[ScopeReport]
    drifts: list[Drift]
    seconds: float
    mode: str = "full"
    stale: int = 0
    stale_samples: list[list[str]] = field(default_factory=list)

    @property
    def collisions(self) -> int:
        return sum(s.collisions for s in self.scopes)

    @property
    def drift_total(self) -> int:
        return sum(sum(s.counts.values()) for s in self.scopes) + self.stale + self.collisions

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for s in self.scopes:
            for k, v in s.counts.items():
                out[k] += v
        out["stale"] = self.stale
        out["key_collisions"] = self.collisions
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "drift": self.drift_total,
            "totals": self.totals(),
            "seconds": round(self.seconds, 3),
            "stale_sync": {"count": self.stale, "samples": self.stale_samples},
            "scopes": [
                {
                    "scope": s.scope,
                    "kind": s.kind,
                    "pg": s.pg_items,
                    "neo4j": s.neo4j_items,
                    "buckets": s.buckets,
                    "differing_buckets": s.differing_buckets,
                    **s.counts,
                    "key_collisions": s.collisions,
                    "samples": {k: v for k, v in s.samples.items() if v},
                    "collision_samples": s.collision_samples,
                }
                for s in self.scopes
            ],
        }


# -- items: (identity, hash) from each side ------------------------------------------------------------------------


def key_texts(values: list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(key_text(v) for v in values)


def node_item(key: list[Any], props: dict[str, Any]) -> tuple[tuple[str, ...], int]:
    """A node's identity and hash, from its properties as built or read back (pg2neo's own left out here)."""
    return key_texts(key), props_hash(graph_props(props))


def fk_item(key: list[Any], target: list[Any]) -> tuple[tuple[str, ...], int]:
    return (*key_texts(key), "->", *key_texts(target)), 0


def join_item(rk: str, start: list[Any], end: list[Any], props: dict[str, Any]) -> tuple[tuple[str, ...], int]:
    """A join relationship's identity and hash (pg2neo's own properties left out here)."""
    return (rk,), digest([*key_texts(start), "->", *key_texts(end), str(props_hash(graph_props(props)))])


def pg_items(
    conn: psycopg.Connection[Any], mapping: Mapping, builder: BatchBuilder, entry: NodeTable | JoinTable
) -> Iterator[tuple[int, tuple[str, ...], int]]:
    """(scope slot, identity, hash) for every item one table's rows give; slot 0 = nodes/join rels, 1+i = fk i."""
    query = page_query(mapping, entry, after=False)
    with conn.transaction(), conn.cursor(name=f"pg2neo_verify_{entry.name}") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(query, [None])
        while rows := cur.fetchmany(FETCH_ROWS):
            batch = builder.new_batch()
            builder.add_rows(batch, entry, rows)
            if isinstance(entry, NodeTable):
                writes = batch.nodes.get(entry.table)
                if writes is None:
                    continue
                for u in writes.upserts:
                    yield (0, *node_item(u["k"], u["p"]))
                for index, links in enumerate(writes.links):
                    for link in links:
                        if link["t"] is not None:
                            yield (1 + index, *fk_item(link["k"], link["t"]))
            else:
                joins = batch.joins.get(entry.table)
                if joins is None:
                    continue
                for u in joins.upserts:
                    yield (0, *join_item(u["key"], u["a"], u["b"], u["p"]))


def scope_query(scope: Scope, among_keys: bool = False) -> str:
    """The Cypher reading a scope's items; among_keys (node and fk scopes): only the nodes whose key is in `$keys`."""
    entry = scope.entry
    if isinstance(entry, NodeTable):
        if scope.rel is None:
            return node_items_query(entry, among_keys)
        return fk_items_query(entry, scope.rel, among_keys)
    assert not among_keys
    return join_items_query(entry)


def neo4j_item(scope: Scope, record: Any) -> tuple[tuple[str, ...], int]:
    if scope.kind == "node":
        return node_item(record["k"], record["p"])
    if scope.kind == "fk":
        return fk_item(record["k"], record["t"])
    key = record["key"]
    rk = key if isinstance(key, str) else f"<no {REL_KEY}: {record['eid']}>"
    return join_item(rk, record["a"], record["b"], record["p"])


def neo4j_items(driver: Driver, database: str, scope: Scope) -> Iterator[tuple[tuple[str, ...], int]]:
    with driver.session(database=database, fetch_size=FETCH_ROWS) as session:
        for record in session.run(scope_query(scope)):
            yield neo4j_item(scope, record)


# -- compare ---------------------------------------------------------------------------------------------------------


class Buckets:
    """Per-bucket item count and sum of item hashes (identity included): two int lists, whatever the table size."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = [0] * size
        self.total = [0] * size
        self.items = 0

    def add(self, identity: tuple[str, ...], content: int) -> None:
        b = bucket_of(identity, self.size)
        self.count[b] += 1
        self.total[b] = (self.total[b] + digest([*identity, str(content)])) & MASK
        self.items += 1

    def differing(self, other: Buckets) -> set[int]:
        return {b for b in range(self.size) if self.count[b] != other.count[b] or self.total[b] != other.total[b]}


def bucket_count(rows: int) -> int:
    """About 16 rows per bucket, between 64 and 2**18 buckets."""
    size = 64
    while size * 16 < rows and size < (1 << 18):
        size *= 2
    return size


def _collect(items: Iterator[tuple[tuple[str, ...], int]], wanted: set[int], size: int) -> dict[tuple[str, ...], int]:
    found: dict[tuple[str, ...], int] = {}
    for identity, content in items:
        if bucket_of(identity, size) not in wanted:
            continue
        ident = identity
        n = 1
        while ident in found:  # a duplicate (two relationships for one row): the copy is extra
            n += 1
            ident = (*identity, f"#{n}")
        found[ident] = content
    return found


def _collect_slots(
    items: Iterator[tuple[int, tuple[str, ...], int]], wanted: list[set[int]], size: int
) -> tuple[list[dict[tuple[str, ...], int]], list[list[tuple[str, ...]]]]:
    """identity -> hash per slot for the wanted buckets, and the identities PostgreSQL gave more than once (a row
    after the first with the same key: a collision, never folded away). A collision always shows as a differing
    bucket, since Neo4j holds one item per key: the item count of its bucket differs."""
    found: list[dict[tuple[str, ...], int]] = [{} for _ in wanted]
    repeated: list[list[tuple[str, ...]]] = [[] for _ in wanted]
    for slot, identity, content in items:
        if wanted[slot] and bucket_of(identity, size) in wanted[slot]:
            if identity in found[slot]:
                repeated[slot].append(identity)
                continue
            found[slot][identity] = content
    return found, repeated


def compare_maps(pg: dict[tuple[str, ...], int], neo: dict[tuple[str, ...], int]) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {k: [] for k in KINDS}
    for ident, h in pg.items():
        other = neo.get(ident)
        if other is None:
            out["missing"].append(ident)
        elif other != h:
            out["mismatch"].append(ident)
    out["extra"] = [ident for ident in neo if ident not in pg]
    for v in out.values():
        v.sort()
    return out


def count_collisions(report: ScopeReport, repeated: list[tuple[str, ...]], samples: int) -> None:
    if report.kind == "fk":  # the node scope of the same rows counts them already
        return
    report.collisions += len(repeated)
    for identity in sorted(set(repeated))[: max(samples - len(report.collision_samples), 0)]:
        report.collision_samples.append(list(identity))


ProgressFn = Callable[[str, int, int], None]
T = TypeVar("T")


def _silent(what: str, done: int, estimate: int) -> None:
    pass


def _counted(items: Iterable[T], tell: ProgressFn, what: str, estimate: int) -> Iterator[T]:
    """The items, telling `tell` every FETCH_ROWS of them and at the end."""
    done = 0
    tell(what, 0, estimate)
    for item in items:
        yield item
        done += 1
        if done % FETCH_ROWS == 0:
            tell(what, done, estimate)
    tell(what, done, max(done, estimate))


def _table_rows(conn: psycopg.Connection[Any], entry: NodeTable | JoinTable) -> int:
    row = conn.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass", (entry.table,)
    ).fetchone()
    return int(row[0]) if row else 0


def verify(
    pg_dsn: str,
    driver: Driver,
    mapping: Mapping,
    database: str = "neo4j",
    samples: int = 5,
    keep_drifts: int = 1_000_000,
    progress: ProgressFn | None = None,
) -> VerifyReport:
    """Full comparison of every scope. `drifts` lists every difference found (up to keep_drifts) for repair.

    `progress(what, done, estimate)` is told how far each read has got (every FETCH_ROWS items)."""
    tell: ProgressFn = progress or _silent
    started = time.monotonic()
    builder = BatchBuilder(mapping)
    scopes = scopes_of(mapping)
    reports: list[ScopeReport] = []
    drifts: list[Drift] = []
    with psycopg.connect(pg_dsn, application_name="pg2neo-verify") as conn:
        prepare_connection(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for entry in mapping.entries:
            mine = [s for s in scopes if s.entry is entry]
            estimate = _table_rows(conn, entry)
            size = bucket_count(estimate)
            pg_b = [Buckets(size) for _ in mine]
            what = f"{entry.table} in PostgreSQL"
            for slot, identity, content in _counted(pg_items(conn, mapping, builder, entry), tell, what, estimate):
                pg_b[slot].add(identity, content)
            scope_reports: list[ScopeReport] = []
            wanted: list[set[int]] = []
            for slot, scope in enumerate(mine):
                neo_b = Buckets(size)
                what = f"{scope.name} in Neo4j"
                for identity, content in _counted(neo4j_items(driver, database, scope), tell, what, estimate):
                    neo_b.add(identity, content)
                scope_reports.append(ScopeReport(scope.name, scope.kind, pg_b[slot].items, neo_b.items, size))
                wanted.append(pg_b[slot].differing(neo_b))
                scope_reports[-1].differing_buckets = len(wanted[-1])
            if any(wanted):
                # One more read of the table keeps identity -> hash for the rows of differing buckets only.
                pg_maps, repeated = _collect_slots(pg_items(conn, mapping, builder, entry), wanted, size)
                for slot, scope in enumerate(mine):
                    if not wanted[slot]:
                        continue
                    neo_map = _collect(neo4j_items(driver, database, scope), wanted[slot], size)
                    found = compare_maps(pg_maps[slot], neo_map)
                    del neo_map
                    report = scope_reports[slot]
                    count_collisions(report, repeated[slot], samples)
                    for kind, idents in found.items():
                        report.counts[kind] = len(idents)
                        report.samples[kind] = [list(i) for i in idents[:samples]]
                        room = keep_drifts - len(drifts)
                        drifts.extend(Drift(scope.name, kind, i) for i in idents[: max(room, 0)])
                del pg_maps
            reports.extend(scope_reports)
    return VerifyReport(reports, drifts, time.monotonic() - started)
