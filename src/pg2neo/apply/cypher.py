"""The graph vocabulary: pg2neo's reserved names in Neo4j and every Cypher statement it runs.

Fixed statements are `LiteralString` constants; per-mapping ones are built by the functions below from the resolved
mapping's labels, types and property names (checked against `IDENTIFIER`, then backquoted with `q`); every value
travels as a parameter. Apply statements handle a whole batch with `UNWIND`; a version guard (`_pg2neo_version`,
the batch's epoch) keeps an older read from overwriting a newer one. Also here: the strict-mode marker statements,
the reads of verify, recent checks and repairs, and the counts per label and type.
"""

from __future__ import annotations

from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass
from typing import Any, Final, LiteralString

from pg2neo.mapping.plan import ForeignKeyRel, JoinTable, NodeTable

INTERNAL_PREFIX: Final = "_pg2neo_"  # every property pg2neo stamps starts with it; the mapping never produces one
VERSION: Final = "_pg2neo_version"
SYNCED_AT: Final = "_pg2neo_synced_at"
REL_KEY: Final = "_pg2neo_key"
HASH_PROP: Final = "_pg2neo_hash"  # the content hash of the mapped properties (mapping.hashing.props_hash_hex)
CHECKPOINT_LABEL: Final = "_Pg2neoCheckpoint"
EPOCH_LABEL: Final = "_Pg2neoEpoch"
MARKER_LABEL: Final = "_Pg2neoTx"


def graph_props(props: AnyMapping[str, Any]) -> dict[str, Any]:
    """The mapped properties of a node or relationship read back from Neo4j (pg2neo's own `_pg2neo_*` left out)."""
    return {k: v for k, v in props.items() if not k.startswith(INTERNAL_PREFIX)}


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
EPOCH_CLAIM: LiteralString = (
    f"MERGE (h:{EPOCH_LABEL} {{name: 'epoch'}})\n"
    f"WITH h, h.high AS high\n"
    f"SET h.high = CASE WHEN high IS NULL OR high < $epoch THEN $epoch ELSE high END\n"
    f"RETURN high"
)
EPOCH_CONSTRAINT: LiteralString = (
    f"CREATE CONSTRAINT `pg2neo_epoch_name` IF NOT EXISTS FOR (h:{EPOCH_LABEL}) REQUIRE h.name IS UNIQUE"
)
# Graphs written before the epoch node existed: the highest version stamped anywhere (read once, when it is missing).
HIGHEST_VERSION: LiteralString = (
    f"CALL () {{ MATCH (n) WHERE n.{VERSION} IS NOT NULL RETURN max(n.{VERSION}) AS v "
    f"UNION ALL MATCH ()-[r]->() WHERE r.{VERSION} IS NOT NULL RETURN max(r.{VERSION}) AS v }}\n"
    f"RETURN max(v) AS high"
)

CHECKPOINT: LiteralString = (
    f"MERGE (c:{CHECKPOINT_LABEL} {{name: $name}}) SET c.last_seq = $last_seq, c.epoch = $epoch, c.at = $synced_at"
)
# Whether the epoch node exists yet, and seeding it (with the highest version stamped so far) when it does not.
EPOCH_MISSING: LiteralString = f"MATCH (h:{EPOCH_LABEL} {{name: 'epoch'}}) RETURN count(h) = 0 AS missing"
EPOCH_SEED: LiteralString = f"MERGE (h:{EPOCH_LABEL} {{name: 'epoch'}}) ON CREATE SET h.high = $high"
AWAIT_INDEXES: LiteralString = "CALL db.awaitIndexes(300)"
PING: LiteralString = "RETURN 1"


# -- strict mode: the transaction markers ----------------------------------------------------------------------------

# One node per global id, under a uniqueness constraint: the committer's marker (commit) or recovery's veto
# (rollback), whichever is created first. The committer creates its marker first thing in its Neo4j transaction,
# before PREPARE, so the constraint's index-entry lock is held from then until that transaction ends: recovery's
# veto (a MERGE) waits on it and then finds the committed marker, or creates the veto, after which the committer's
# transaction cannot commit (ConstraintValidationFailed). The decision never depends on a timeout.
MARKER_CONSTRAINT: LiteralString = (
    "CREATE CONSTRAINT pg2neo_tx_gid IF NOT EXISTS FOR (m:_Pg2neoTx) REQUIRE m.gid IS UNIQUE"
)
MARKER_CREATE: LiteralString = "CREATE (:_Pg2neoTx {gid: $gid, epoch: $epoch, at: datetime()})"
MARKER_VETO: LiteralString = (
    "MERGE (m:_Pg2neoTx {gid: $gid}) ON CREATE SET m.vetoed = true, m.at = datetime() "
    "RETURN coalesce(m.vetoed, false) AS vetoed"
)
MARKERS_IN_SCOPE: LiteralString = (
    "MATCH (m:_Pg2neoTx) WHERE m.gid STARTS WITH $scope RETURN m.gid AS gid, coalesce(m.vetoed, false) AS vetoed"
)
MARKERS_AMONG: LiteralString = (
    "MATCH (m:_Pg2neoTx) WHERE m.gid IN $gids RETURN m.gid AS gid, coalesce(m.vetoed, false) AS vetoed"
)
MARKERS_DELETE: LiteralString = "MATCH (m:_Pg2neoTx) WHERE m.gid IN $gids DELETE m"


# -- reads of verify and recent checks (one row per item of a scope) --------------------------------------------------


def key_list(var: str, props: tuple[str, ...]) -> str:
    """`[var.p1, var.p2, ...]`: an item's key as a list."""
    return "[" + ", ".join(f"{var}.{q(p)}" for p in props) + "]"


def _among(node: NodeTable, among_keys: bool) -> str:
    return f" WHERE {key_list('n', node.key_props)} IN $keys" if among_keys else " "


def node_items_query(node: NodeTable, among_keys: bool = False) -> str:
    """Key `k` and properties `p` of the label's nodes (with among_keys, only those whose key is in `$keys`)."""
    return (
        f"MATCH (n:{q(node.label)}){_among(node, among_keys)} "
        f"RETURN {key_list('n', node.key_props)} AS k, properties(n) AS p"
    )


def fk_items_query(node: NodeTable, rel: ForeignKeyRel, among_keys: bool = False) -> str:
    """Key `k` and target key `t` of each foreign-key relationship of the label's nodes."""
    arrow = f"-[r:{q(rel.type)}]->" if rel.direction == "out" else f"<-[r:{q(rel.type)}]-"
    return (
        f"MATCH (n:{q(node.label)}){arrow}(x:{q(rel.target_label)}){_among(node, among_keys)} "
        f"RETURN {key_list('n', node.key_props)} AS k, {key_list('x', rel.target_key_props)} AS t"
    )


def join_items_query(join: JoinTable) -> str:
    """Row key `key`, element id `eid`, end keys `a`, `b` and properties `p` of a join table's relationships."""
    return (
        f"MATCH (a:{q(join.start.label)})-[r:{q(join.type)}]->(b:{q(join.end.label)})  "
        f"RETURN r.{REL_KEY} AS key, elementId(r) AS eid, {key_list('a', join.start.key_props)} AS a, "
        f"{key_list('b', join.end.key_props)} AS b, properties(r) AS p"
    )


def recently_synced_query(node: NodeTable) -> str:
    """Keys `k` of the label's nodes synced within the last `$s` seconds."""
    return (
        f"MATCH (n:{q(node.label)}) WHERE n.{SYNCED_AT} >= datetime() - duration({{seconds: $s}}) "
        f"RETURN {key_list('n', node.key_props)} AS k"
    )


def synced_at_query(node: NodeTable) -> str:
    """Key `k` and `_pg2neo_synced_at` (`synced`) of the label's nodes whose key is in `$keys`."""
    return (
        f"MATCH (n:{q(node.label)}){_among(node, True)} RETURN {key_list('n', node.key_props)} AS k, "
        f"n.{SYNCED_AT} AS synced"
    )


# -- reads and deletes of repairs (one item) ------------------------------------------------------------------------


def node_props_query(node: NodeTable) -> str:
    """Properties `p` of the node whose typed key is `$k`."""
    key = "{" + ", ".join(f"{q(p)}: $k[{i}]" for i, p in enumerate(node.key_props)) + "}"
    return f"MATCH (n:{q(node.label)} {key}) RETURN properties(n) AS p"


def join_props_query(join: JoinTable) -> str:
    """Properties `p` and end keys `a`, `b` (properties `$ak`, `$bk`) of the relationship whose row key is `$rk`."""
    return (
        f"MATCH (a)-[r:{q(join.type)} {{{REL_KEY}: $rk}}]->(b) RETURN properties(r) AS p, "
        f"[p IN $ak | a[p]] AS a, [p IN $bk | b[p]] AS b"
    )


DELETE_REL_BY_ELEMENT_ID: LiteralString = "MATCH ()-[r]->() WHERE elementId(r) = $eid DELETE r"


def delete_join_query(join: JoinTable) -> str:
    """Delete the relationship whose row key is `$rk`."""
    return f"MATCH ()-[r:{q(join.type)} {{{REL_KEY}: $rk}}]->() DELETE r"


def delete_node_by_key_text_query(node: NodeTable) -> str:
    """Detach-delete the node whose key properties (`$props`), as text, are `$k`."""
    return f"MATCH (n:{q(node.label)}) WHERE [p IN $props | toString(n[p])] = $k DETACH DELETE n"


# -- counts and hints -----------------------------------------------------------------------------------------------


def count_label_query(label: str) -> str:
    return f"MATCH (n:{q(label)}) RETURN count(n) AS c"


def count_type_query(rtype: str) -> str:
    return f"MATCH ()-[r:{q(rtype)}]->() RETURN count(r) AS c"


def delete_label_hint(label: str) -> str:
    """What a person runs to delete a label's nodes by hand (shown, never run by pg2neo)."""
    return f"MATCH (n:{q(label)}) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS"


def delete_type_hint(rtype: str) -> str:
    """What a person runs to delete a type's relationships by hand (shown, never run by pg2neo)."""
    return f"MATCH ()-[r:{q(rtype)}]->() CALL (r) {{ DELETE r }} IN TRANSACTIONS"
