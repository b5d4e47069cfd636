"""The test oracle: the graph PostgreSQL's rows SHOULD give, computed independently of pg2neo, and the graph Neo4j has.

Place in the data flow: none — it stands beside the pipeline. `expected_graph` runs hand-written SQL per schema
(one query per label and per relationship type; no pg2neo mapping, reader or ops code), `actual_graph` reads every
node and relationship from Neo4j. Both go through the same `norm` so that equal data compares equal (uuid -> str,
numeric -> float, timestamptz -> UTC datetime, json text -> parsed object, Neo4j temporal -> Python). Properties
whose names start with `_pg2neo` and nodes with a `:_Pg2neo...` label
(checkpoint, strict-mode markers) are pg2neo's bookkeeping and are ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from neo4j import Driver
from neo4j.time import Date, DateTime, Duration, Time
from psycopg.rows import dict_row

NodeId = tuple[str, tuple[Any, ...]]  # (labels joined by ":", key values)
Props = frozenset[tuple[str, Any]]
Node = tuple[str, tuple[Any, ...], Props]
Rel = tuple[str, NodeId, NodeId, Props]


@dataclass(frozen=True)
class Interval:
    """An interval as PostgreSQL and Neo4j both hold it: months, days and nanoseconds, kept apart."""

    months: int
    days: int
    nanos: int


def interval_sql(column: str) -> str:
    """SQL giving an interval column as `[months, days, microseconds]` (decode with `decode_interval`)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE ARRAY["
        f"(extract(year FROM {column}) * 12 + extract(month FROM {column}))::bigint, "
        f"extract(day FROM {column})::bigint, "
        f"(extract(hour FROM {column}) * 3600000000 + extract(minute FROM {column}) * 60000000 "
        f"+ extract(microseconds FROM {column}))::bigint] END"
    )


def decode_interval(value: list[int]) -> Interval:
    return Interval(int(value[0]), int(value[1]), int(value[2]) * 1000)


def norm(value: Any) -> Any:
    """One comparable, hashable form for a value read from PostgreSQL or from Neo4j."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, float | Decimal):
        number = float(value)
        return ("float", "NaN") if math.isnan(number) else ("float", number)
    if isinstance(value, int):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return ("bytes", bytes(value))
    if isinstance(value, DateTime):
        return norm(value.to_native())
    if isinstance(value, Date):
        return value.to_native()
    if isinstance(value, Time):
        return value.to_native()
    if isinstance(value, Duration):
        return Interval(value.months, value.days, value.seconds * 1_000_000_000 + value.nanoseconds)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo is not None else value
    if isinstance(value, list | tuple):
        return tuple(norm(v) for v in value)
    if isinstance(value, dict):
        return ("json", json.dumps(value, sort_keys=True))
    return value


def _json(value: Any) -> Any:
    """A JSON document, wherever it came from (psycopg parses json/jsonb; Neo4j holds the text)."""
    parsed = json.loads(value) if isinstance(value, str) else value
    return ("json", json.dumps(parsed, sort_keys=True))


def _props(row: Mapping[str, Any], skip: set[str], decoders: Mapping[str, Callable[[Any], Any]]) -> Props:
    out = []
    for name, value in row.items():
        if name in skip or name.startswith("_pg2neo") or value is None:
            continue
        decode = decoders.get(name)
        out.append((name, decode(value) if decode is not None else norm(value)))
    return frozenset(out)


@dataclass(frozen=True)
class NodeSpec:
    """The nodes of one label: `sql` returns one row per node, its columns named as the properties."""

    labels: str  # sorted, joined by ":"
    key: tuple[str, ...]
    sql: str
    json_props: frozenset[str] = frozenset()
    interval_props: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RelSpec:
    """Relationships of one type: `sql` returns s0.. (start key), e0.. (end key) and the properties."""

    type: str
    start: str
    end: str
    sql: str
    json_props: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SchemaSpec:
    nodes: tuple[NodeSpec, ...]
    rels: tuple[RelSpec, ...]
    primary_label: dict[str, str] = field(default_factory=dict)  # label used in relationships -> node labels

    def node_spec(self, labels: str) -> NodeSpec:
        return next(n for n in self.nodes if n.labels == labels)


@dataclass
class Graph:
    nodes: Counter[Node]
    rels: Counter[Rel]


def _decoders(json_props: frozenset[str], interval_props: frozenset[str] = frozenset()) -> dict[str, Any]:
    decoders: dict[str, Any] = {name: _json for name in json_props}
    decoders.update({name: decode_interval for name in interval_props})
    return decoders


def expected_graph(conn: psycopg.Connection[Any], spec: SchemaSpec) -> Graph:
    nodes: Counter[Node] = Counter()
    rels: Counter[Rel] = Counter()
    with conn.cursor(row_factory=dict_row) as cur:
        for node in spec.nodes:
            decoders = _decoders(node.json_props, node.interval_props)
            for row in cur.execute(node.sql).fetchall():
                key = tuple(norm(row[k]) for k in node.key)
                nodes[(node.labels, key, _props(row, set(), decoders))] += 1
        for rel in spec.rels:
            decoders = _decoders(rel.json_props)
            for row in cur.execute(rel.sql).fetchall():
                start = tuple(norm(v) for k, v in row.items() if k[0] == "s" and k[1:].isdigit())
                end = tuple(norm(v) for k, v in row.items() if k[0] == "e" and k[1:].isdigit())
                ends = {k for k in row if k[0] in "se" and k[1:].isdigit()}
                rels[(rel.type, (rel.start, start), (rel.end, end), _props(row, ends, decoders))] += 1
    if not conn.autocommit:
        conn.rollback()
    return Graph(nodes, rels)


def actual_graph(driver: Driver, spec: SchemaSpec, database: str = "neo4j") -> Graph:
    nodes: Counter[Node] = Counter()
    rels: Counter[Rel] = Counter()
    by_labels = {n.labels: n for n in spec.nodes}

    def node_id(labels: list[str], props: dict[str, Any]) -> tuple[str, NodeSpec | None, tuple[Any, ...]]:
        joined = ":".join(sorted(labels))
        node = by_labels.get(joined)
        key_names = node.key if node is not None else tuple(sorted(props))
        return joined, node, tuple(norm(props.get(k)) for k in key_names)

    with driver.session(database=database) as session:
        for record in session.run(
            "MATCH (n) WHERE NOT any(l IN labels(n) WHERE l STARTS WITH '_Pg2neo') "
            "RETURN labels(n) AS labels, properties(n) AS p"
        ):
            joined, node, key = node_id(record["labels"], record["p"])
            # Intervals arrive as Neo4j Durations, which `norm` handles; JSON arrives as text.
            decoders = _decoders(node.json_props) if node is not None else {}
            nodes[(joined, key, _props(record["p"], set(), decoders))] += 1
        rel_json = {r.type: r.json_props for r in spec.rels}
        for record in session.run(
            "MATCH (a)-[r]->(b) RETURN type(r) AS t, labels(a) AS la, properties(a) AS pa, "
            "labels(b) AS lb, properties(b) AS pb, properties(r) AS p"
        ):
            start_labels, _, start_key = node_id(record["la"], record["pa"])
            end_labels, _, end_key = node_id(record["lb"], record["pb"])
            start = spec.primary_label.get(start_labels, start_labels)
            end = spec.primary_label.get(end_labels, end_labels)
            decoders = _decoders(rel_json.get(record["t"], frozenset()))
            rels[(record["t"], (start, start_key), (end, end_key), _props(record["p"], set(), decoders))] += 1
    return Graph(nodes, rels)


def diff(expected: Graph, actual: Graph, limit: int = 8) -> str:
    """A readable account of how the two graphs differ (empty when they are equal)."""
    lines = []
    pairs: tuple[tuple[str, Counter[Any], Counter[Any]], ...] = (
        ("node", expected.nodes, actual.nodes),
        ("relationship", expected.rels, actual.rels),
    )
    for what, want, got in pairs:
        missing = list((want - got).elements())
        extra = list((got - want).elements())
        lines += [f"missing {what}: {item!r}" for item in missing[:limit]]
        lines += [f"unexpected {what}: {item!r}" for item in extra[:limit]]
        if len(missing) > limit or len(extra) > limit:
            lines.append(f"... {len(missing)} missing and {len(extra)} unexpected {what}s in all")
    return "\n".join(lines)


def assert_graph_matches(conn: psycopg.Connection[Any], driver: Driver, spec: SchemaSpec) -> Graph:
    """The oracle's check: Neo4j holds exactly the graph the PostgreSQL rows call for. Returns it."""
    expected = expected_graph(conn, spec)
    actual = actual_graph(driver, spec)
    problems = diff(expected, actual)
    assert not problems, "the graph differs from PostgreSQL:\n" + problems
    return expected


# -- the reference schema (src/pg2neo/demo/schema.sql), its graph written out by hand ------------------------------

REFERENCE = SchemaSpec(
    nodes=(
        NodeSpec("Tenant", ("id",), "SELECT id, name, plan, created_at, updated_at, version FROM tenants"),
        NodeSpec(
            "User",
            ("id",),
            "SELECT id, tenant_id, email, display_name, is_active, created_at, updated_at, version FROM users",
        ),
        NodeSpec(
            "Program",
            ("id",),
            "SELECT id, tenant_id, name, description, starts_on, created_at, updated_at, version FROM programs",
        ),
        NodeSpec(
            "Project",
            ("id",),
            "SELECT id, tenant_id, program_id, name, description, budget, created_at, updated_at, version "
            "FROM projects",
        ),
        NodeSpec(
            "ContentItem",
            ("id",),
            "SELECT neo4j_node_id AS id, id AS pg_id, tenant_id, project_id, author_id, kind::text AS kind, title, "
            "description, body, tags, metadata, created_at, updated_at, version FROM content_items",
            json_props=frozenset({"metadata"}),
        ),
        NodeSpec(
            "ContentChunk",
            ("id",),
            "SELECT neo4j_node_id AS id, id AS pg_id, content_item_id, chunk_index, text, token_count, embedding, "
            "created_at, updated_at, version FROM content_chunks",
        ),
        NodeSpec(
            "Thread",
            ("id",),
            "SELECT neo4j_node_id AS id, id AS pg_id, tenant_id, project_id, parent_thread_id, created_by, title, "
            "created_at, updated_at, version FROM threads",
        ),
        NodeSpec(
            "Message",
            ("id",),
            "SELECT neo4j_node_id AS id, id AS pg_id, thread_id, author_id, role::text AS role, body, token_count, "
            "created_at, updated_at, version FROM messages",
        ),
    ),
    rels=(
        RelSpec("MEMBER_OF", "User", "Tenant", "SELECT id AS s0, tenant_id AS e0 FROM users"),
        RelSpec("OWNS_PROGRAM", "Tenant", "Program", "SELECT tenant_id AS s0, id AS e0 FROM programs"),
        RelSpec("OWNS_PROJECT", "Tenant", "Project", "SELECT tenant_id AS s0, id AS e0 FROM projects"),
        RelSpec(
            "HAS_PROJECT",
            "Program",
            "Project",
            "SELECT program_id AS s0, id AS e0 FROM projects WHERE program_id IS NOT NULL",
        ),
        RelSpec(
            "OWNS_CONTENT", "Tenant", "ContentItem", "SELECT tenant_id AS s0, neo4j_node_id AS e0 FROM content_items"
        ),
        RelSpec(
            "HAS_CONTENT",
            "Project",
            "ContentItem",
            "SELECT project_id AS s0, neo4j_node_id AS e0 FROM content_items WHERE project_id IS NOT NULL",
        ),
        RelSpec(
            "AUTHORED",
            "User",
            "ContentItem",
            "SELECT author_id AS s0, neo4j_node_id AS e0 FROM content_items WHERE author_id IS NOT NULL",
        ),
        RelSpec(
            "HAS_CHUNK",
            "ContentItem",
            "ContentChunk",
            "SELECT ci.neo4j_node_id AS s0, cc.neo4j_node_id AS e0 FROM content_chunks cc "
            "JOIN content_items ci ON ci.id = cc.content_item_id",
        ),
        RelSpec("OWNS_THREAD", "Tenant", "Thread", "SELECT tenant_id AS s0, neo4j_node_id AS e0 FROM threads"),
        RelSpec(
            "IN_PROJECT",
            "Thread",
            "Project",
            "SELECT neo4j_node_id AS s0, project_id AS e0 FROM threads WHERE project_id IS NOT NULL",
        ),
        RelSpec(
            "HAS_PARENT",
            "Thread",
            "Thread",
            "SELECT t.neo4j_node_id AS s0, p.neo4j_node_id AS e0 FROM threads t "
            "JOIN threads p ON p.id = t.parent_thread_id",
        ),
        RelSpec(
            "STARTED",
            "User",
            "Thread",
            "SELECT created_by AS s0, neo4j_node_id AS e0 FROM threads WHERE created_by IS NOT NULL",
        ),
        RelSpec(
            "CONTAINS_MESSAGE",
            "Thread",
            "Message",
            "SELECT t.neo4j_node_id AS s0, m.neo4j_node_id AS e0 FROM messages m JOIN threads t ON t.id = m.thread_id",
        ),
        RelSpec(
            "SENT",
            "User",
            "Message",
            "SELECT author_id AS s0, neo4j_node_id AS e0 FROM messages WHERE author_id IS NOT NULL",
        ),
        RelSpec(
            "INCLUDES",
            "Thread",
            "ContentItem",
            "SELECT t.neo4j_node_id AS s0, ci.neo4j_node_id AS e0, tc.relevance_score, tc.added_at "
            "FROM thread_content tc JOIN threads t ON t.id = tc.thread_id "
            "JOIN content_items ci ON ci.id = tc.content_item_id",
        ),
        RelSpec(
            "USED_CONTEXT",
            "Message",
            "ContentChunk",
            "SELECT m.neo4j_node_id AS s0, cc.neo4j_node_id AS e0, mc.rank FROM message_context mc "
            "JOIN messages m ON m.id = mc.message_id JOIN content_chunks cc ON cc.id = mc.chunk_id",
        ),
    ),
)
