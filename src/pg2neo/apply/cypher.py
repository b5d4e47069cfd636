"""Cypher for the apply stage, generated once per mapped table from checked identifiers.

Labels, types and property names come only from the resolved mapping (checked against `IDENTIFIER`) and are
backquoted; every value travels as a parameter. Each statement handles a whole batch with `UNWIND`.
A version guard (`_pg2neo_version`, the batch's epoch) keeps an older read from overwriting a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pg2neo.mapping.plan import ForeignKeyRel, JoinTable, NodeTable

VERSION = "_pg2neo_version"
SYNCED_AT = "_pg2neo_synced_at"
REL_KEY = "_pg2neo_key"
CHECKPOINT_LABEL = "_Pg2neoCheckpoint"
EPOCH_LABEL = "_Pg2neoEpoch"


def q(name: str) -> str:
    """Backquote a checked identifier (doubling any backquote, though checked names have none)."""
    return "`" + name.replace("`", "``") + "`"


def _key_map(props: tuple[str, ...], source: str) -> str:
    return "{" + ", ".join(f"{q(p)}: {source}[{i}]" for i, p in enumerate(props)) + "}"


def _guard(var: str) -> str:
    return f"({var}.{VERSION} IS NULL OR {var}.{VERSION} <= $epoch)"


@dataclass(frozen=True)
class NodeStatements:
    upsert: str
    delete: str
    links: tuple[str, ...]
    truncate: str


def epoch_sets(props: tuple[str, ...]) -> str:
    """SET items for node `n`'s timestamptz properties, which arrive in `r.e` as [epoch seconds, nanoseconds]
    (see NodeTable.epoch_props and writer.epoch_rows)."""
    return "".join(
        f",\n    n.{q(p)} = CASE WHEN r.e.{q(p)} IS NULL THEN null "
        f"ELSE datetime({{epochSeconds: r.e.{q(p)}[0], nanosecond: r.e.{q(p)}[1]}}) END"
        for p in props
    )


def node_statements(table: NodeTable) -> NodeStatements:
    label = q(table.label)
    key = _key_map(table.key_props, "r.k")
    extra = "".join(f":{q(lbl)}" for lbl in table.labels[1:])
    set_extra = f"\nSET n{extra}" if extra else ""
    upsert = (
        f"UNWIND $rows AS r\n"
        f"MERGE (n:{label} {key})\n"
        f"WITH n, r WHERE {_guard('n')}\n"
        f"SET n = r.p, n.{VERSION} = $epoch, n.{SYNCED_AT} = $synced_at{epoch_sets(table.epoch_props)}{set_extra}\n"
        f"RETURN count(*) AS applied"
    )
    delete = (
        f"UNWIND $keys AS k\nMATCH (n:{label} {_key_map(table.key_props, 'k')})\n"
        f"WITH k, n, {_guard('n')} AS ok\n"
        f"CALL (n, ok) {{ WITH n WHERE ok DETACH DELETE n }}\n"
        f"RETURN count(CASE WHEN NOT ok THEN k END) AS refused"
    )
    links = tuple(_link_statement(table, rel) for rel in table.fk_rels)
    truncate = f"MATCH (n:{label}) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 10000 ROWS"
    return NodeStatements(upsert, delete, links, truncate)


def _link_statement(table: NodeTable, rel: ForeignKeyRel) -> str:
    """Make the node's relationship for one foreign key match the row: moved, removed (NULL) or created."""
    label = q(table.label)
    target = q(rel.target_label)
    rtype = q(rel.type)
    pattern_old = f"(n)-[old:{rtype}]->(x)" if rel.direction == "out" else f"(n)<-[old:{rtype}]-(x)"
    pattern_new = f"(n)-[:{rtype}]->(x)" if rel.direction == "out" else f"(n)<-[:{rtype}]-(x)"
    same_target = " AND ".join(f"x.{q(p)} = r.t[{i}]" for i, p in enumerate(rel.target_key_props))
    return (
        f"UNWIND $rows AS r\n"
        f"MATCH (n:{label} {_key_map(table.key_props, 'r.k')})\n"
        f"WHERE {_guard('n')}\n"  # a node whose upsert the guard refused keeps its relationships too
        f"CALL (n, r) {{\n"
        f"  MATCH {pattern_old}\n"
        f"  WHERE r.t IS NULL OR NOT (x:{target} AND {same_target})\n"
        f"  DELETE old }}\n"
        f"WITH n, r WHERE r.t IS NOT NULL\n"
        f"MERGE (x:{target} {_key_map(rel.target_key_props, 'r.t')})\n"
        f"MERGE {pattern_new}"
    )


@dataclass(frozen=True)
class JoinStatements:
    clear: str
    upsert: str
    truncate: str
    index: str


def join_statements(table: JoinTable) -> JoinStatements:
    rtype = q(table.type)
    start, end = table.start, table.end
    same_ends = " AND ".join(
        [f"startNode(old).{q(p)} = r.a[{i}]" for i, p in enumerate(start.key_props)]
        + [f"endNode(old).{q(p)} = r.b[{i}]" for i, p in enumerate(end.key_props)]
    )
    clear = (
        f"UNWIND $rows AS r\n"
        f"MATCH ()-[old:{rtype} {{{REL_KEY}: r.key}}]->()\n"
        f"WHERE r.a IS NULL OR NOT ({same_ends})\n"
        f"WITH old, {_guard('old')} AS ok\n"
        f"CALL (old, ok) {{ WITH old WHERE ok DELETE old }}\n"
        f"RETURN count(CASE WHEN NOT ok THEN old END) AS refused"
    )
    upsert = (
        f"UNWIND $rows AS r\n"
        f"MERGE (a:{q(start.label)} {_key_map(start.key_props, 'r.a')})\n"
        f"MERGE (b:{q(end.label)} {_key_map(end.key_props, 'r.b')})\n"
        f"MERGE (a)-[rel:{rtype} {{{REL_KEY}: r.key}}]->(b)\n"
        f"WITH rel, r WHERE {_guard('rel')}\n"
        f"SET rel = r.p, rel.{REL_KEY} = r.key, rel.{VERSION} = $epoch, rel.{SYNCED_AT} = $synced_at\n"
        f"RETURN count(*) AS applied"
    )
    truncate = f"MATCH ()-[r:{rtype}]->() CALL (r) {{ DELETE r }} IN TRANSACTIONS OF 10000 ROWS"
    index = f"CREATE INDEX {q('pg2neo_' + table.type + '_key')} IF NOT EXISTS FOR ()-[r:{rtype}]-() ON (r.{REL_KEY})"
    return JoinStatements(clear, upsert, truncate, index)


def constraint_statement(table: NodeTable) -> str:
    props = ", ".join(f"n.{q(p)}" for p in table.key_props)
    name = q(f"pg2neo_{table.label}_key")
    return f"CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{q(table.label)}) REQUIRE ({props}) IS UNIQUE"


# The highest epoch the graph has seen, claimed first in every epoch-stamped transaction (which also orders the writes
# of two sources feeding one graph: the node's write lock is held to commit). A write whose epoch is below it would be
# refused by the version guards: the writer raises `EpochBehind` instead, and the caller moves its sequence past it.
EPOCH_CLAIM = (
    f"MERGE (h:{EPOCH_LABEL} {{name: 'epoch'}})\n"
    f"WITH h, h.high AS high\n"
    f"SET h.high = CASE WHEN high IS NULL OR high < $epoch THEN $epoch ELSE high END\n"
    f"RETURN high"
)
EPOCH_CONSTRAINT = (
    f"CREATE CONSTRAINT {q('pg2neo_epoch_name')} IF NOT EXISTS FOR (h:{EPOCH_LABEL}) REQUIRE h.name IS UNIQUE"
)
# Graphs written before the epoch node existed: the highest version stamped anywhere (read once, when it is missing).
HIGHEST_VERSION = (
    f"CALL () {{ MATCH (n) WHERE n.{VERSION} IS NOT NULL RETURN max(n.{VERSION}) AS v "
    f"UNION ALL MATCH ()-[r]->() WHERE r.{VERSION} IS NOT NULL RETURN max(r.{VERSION}) AS v }}\n"
    f"RETURN max(v) AS high"
)

CHECKPOINT = (
    f"MERGE (c:{CHECKPOINT_LABEL} {{name: $name}}) SET c.last_seq = $last_seq, c.epoch = $epoch, c.at = $synced_at"
)
