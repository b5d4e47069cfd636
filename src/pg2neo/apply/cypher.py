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


def _guard(var: str, version: str = "$epoch") -> str:
    return f"({var}.{VERSION} IS NULL OR {var}.{VERSION} <= {version})"


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


def node_statements(table: NodeTable, version: str = "$epoch") -> NodeStatements:
    """The statements of one node table; `version` is what stamps and guards a row: the batch's `$epoch`, or each
    row's own `r.v` (the Kafka sink, whose rows of one batch come from many source transactions)."""
    label = q(table.label)
    key = _key_map(table.key_props, "r.k")
    extra = "".join(f":{q(lbl)}" for lbl in table.labels[1:])
    set_extra = f"\nSET n{extra}" if extra else ""
    upsert = (
        f"UNWIND $rows AS r\n"
        f"MERGE (n:{label} {key})\n"
        f"WITH n, r WHERE {_guard('n', version)}\n"
        f"SET n = r.p, n.{VERSION} = {version}, n.{SYNCED_AT} = $synced_at{epoch_sets(table.epoch_props)}{set_extra}\n"
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
    """Make the node's relationship for one foreign key match the row: moved, removed (NULL) or created.

    The node's relationships of the type are read first (a few, from the node's side): a row whose relationship is
    already the right one (most updates) writes nothing and locks no target node; only a missing one is merged
    (a MERGE of a relationship to a dense target costs ~20 db hits a row even when it exists)."""
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
        f"WITH n, r, [{pattern_old} | "
        f"{{old: old, keep: coalesce(r.t IS NOT NULL AND x:{target} AND {same_target}, false)}}] AS olds\n"
        f"FOREACH (o IN [o IN olds WHERE NOT o.keep] | DELETE o.old)\n"
        f"WITH n, r, olds WHERE r.t IS NOT NULL AND NOT any(o IN olds WHERE o.keep)\n"
        f"MERGE (x:{target} {_key_map(rel.target_key_props, 'r.t')})\n"
        f"MERGE {pattern_new}"
    )


@dataclass(frozen=True)
class JoinStatements:
    clear: str
    upsert: str
    truncate: str
    index: str


def join_statements(table: JoinTable, version: str = "$epoch") -> JoinStatements:
    """The statements of one join table (`version`: see `node_statements`)."""
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
        f"WITH old, {_guard('old', version)} AS ok\n"
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
# A source position stored only if it still holds what the writer read (`$expected`, null for none yet): the write
# lock taken first makes two workers of one partition (a rebalance under way) take turns, and the second's
# transaction stores nothing (`stored` = 0) and is rolled back.
CHECKPOINT_FENCED: LiteralString = (
    f"MERGE (c:{CHECKPOINT_LABEL} {{name: $name}})\n"
    f"SET c.fence = coalesce(c.fence, 0) + 1\n"
    f"WITH c WHERE (c.last_seq IS NULL AND $expected IS NULL) OR c.last_seq = $expected\n"
    f"SET c.last_seq = $last_seq, c.epoch = $epoch, c.at = $synced_at, c.source_ms = $source_ms\n"
    f"RETURN count(c) AS stored"
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


# -- awaiting endpoints (the Kafka sink) -----------------------------------------------------------------------------
#
# Events of different tables arrive in any order across partitions, so a relationship may be written before its end
# node exists, or after the end node's delete. The sink never creates an endpoint from a relationship (no "stub"
# that a later delete would leave behind, resurrected): a relationship whose end is missing is kept as a
# `_Pg2neoPending` node, found by the end's token (label, identifying properties and values, see
# `apply/endpoints.py`) and turned into the relationship when that node is upserted. Relationships carry the epoch
# that wrote them, and a node delete leaves a node that a newer relationship points at (the row came back later in
# PostgreSQL, and its upsert is still on its way).

PENDING_LABEL: Final = "_Pg2neoPending"
TRUNCATED_LABEL: Final = "_Pg2neoTruncated"  # {name: a label or type, epoch}: rows up to it were truncated
WAIT: Final = "_pg2neo_wait"  # the token of the end this pending relationship waits for
OWNER: Final = "_pg2neo_owner"  # a foreign-key relationship's owner node's token
DEF: Final = "_pg2neo_def"  # which relationship definition of the mapping it is


@dataclass(frozen=True)
class Lookup:
    """How a relationship finds its end node: a label and the properties that identify it (the node key, or the
    properties of the columns a foreign key references when they are not the key)."""

    label: str
    props: tuple[str, ...]


def _slots(prefix: str, size: int, source: str) -> str:
    return ", ".join(f"{INTERNAL_PREFIX}{prefix}{i}: {source}[{i}]" for i in range(size))


def _slot_map(props: tuple[str, ...], prefix: str) -> str:
    return "{" + ", ".join(f"{q(p)}: p.{INTERNAL_PREFIX}{prefix}{i}" for i, p in enumerate(props)) + "}"


PENDING_INDEXES: tuple[LiteralString, ...] = (
    f"CREATE INDEX `pg2neo_pending_wait` IF NOT EXISTS FOR (p:{PENDING_LABEL}) ON (p.{WAIT})",
    f"CREATE INDEX `pg2neo_pending_owner` IF NOT EXISTS FOR (p:{PENDING_LABEL}) ON (p.{OWNER})",
    f"CREATE INDEX `pg2neo_pending_key` IF NOT EXISTS FOR (p:{PENDING_LABEL}) ON (p.{REL_KEY})",
)
PENDING_COUNT: LiteralString = f"MATCH (p:{PENDING_LABEL}) RETURN count(p) AS c"
# The base of a Kafka sink group's versions: the graph's epoch mark when the group first ran, kept for the group.
SINK_BASE: LiteralString = (
    f"OPTIONAL MATCH (h:{EPOCH_LABEL} {{name: 'epoch'}})\n"
    f"WITH coalesce(h.high, 0) AS high\n"
    f"MERGE (c:{CHECKPOINT_LABEL} {{name: $name}}) ON CREATE SET c.last_seq = high\n"
    f"RETURN c.last_seq AS base"
)
# The Kafka sink's stored positions of one consumer group (`$prefix` = "kafka:<group>:").
SINK_CHECKPOINTS: LiteralString = (
    f"MATCH (c:{CHECKPOINT_LABEL}) WHERE c.name STARTS WITH $prefix "
    f"RETURN c.name AS name, c.last_seq AS next, c.at AS at, c.source_ms AS source_ms"
)


_BY_TOKEN = f"UNWIND $tokens AS token\nMATCH (p:{PENDING_LABEL} {{{WAIT}: token}}) WHERE p.{DEF} = $def\n"
_ALL_OF_DEFINITION = f"MATCH (p:{PENDING_LABEL}) WHERE p.{DEF} = $def\n"


def sweep_statement(resolve: str) -> str:
    """A definition's resolve statement over all its pending relationships rather than given tokens: the sink runs it
    now and then, for a pending relationship created while its end node was being created by another worker's
    transaction (neither saw the other's uncommitted write)."""
    assert resolve.startswith(_BY_TOKEN)
    return _ALL_OF_DEFINITION + resolve[len(_BY_TOKEN) :]


def lookup_index(lookup: Lookup) -> str:
    """An index on the properties a foreign key finds its target by, when they are not the (constrained) key."""
    name = q("pg2neo_" + lookup.label + "_" + "_".join(lookup.props))
    props = ", ".join(f"n.{q(p)}" for p in lookup.props)
    return f"CREATE INDEX {name} IF NOT EXISTS FOR (n:{q(lookup.label)}) ON ({props})"


@dataclass(frozen=True)
class AwaitingLink:
    """The statements of one foreign-key relationship when endpoints may arrive later."""

    write: str
    resolve: str
    wait: str  # make pending relationships of given rows ({o, w, v, k, t})
    incoming: str  # the relationships into target nodes about to be deleted: to wait for the row's return


def awaiting_link_statements(table: NodeTable, rel: ForeignKeyRel, target: Lookup) -> AwaitingLink:
    label, tlabel, rtype = q(table.label), q(target.label), q(rel.type)
    out = rel.direction == "out"
    pattern_old = f"(n)-[old:{rtype}]->(x)" if out else f"(n)<-[old:{rtype}]-(x)"
    pattern_new = f"(n)-[rel:{rtype}]->(x)" if out else f"(n)<-[rel:{rtype}]-(x)"
    same_target = " AND ".join(f"x.{q(p)} = r.t[{i}]" for i, p in enumerate(target.props))
    write = (
        f"UNWIND $rows AS r\n"
        f"MATCH (n:{label} {_key_map(table.key_props, 'r.k')})\n"
        f"WHERE {_guard('n', 'r.v')}\n"
        f"CALL (n, r) {{\n"
        f"  MATCH {pattern_old}\n"
        f"  WHERE r.t IS NULL OR NOT (x:{tlabel} AND {same_target})\n"
        f"  DELETE old }}\n"
        f"CALL (r) {{\n"
        f"  MATCH (p:{PENDING_LABEL} {{{OWNER}: r.o}}) WHERE p.{DEF} = $def\n"
        f"  DELETE p }}\n"
        f"WITH n, r WHERE r.t IS NOT NULL\n"
        f"OPTIONAL MATCH (x:{tlabel} {_key_map(target.props, 'r.t')})\n"
        f"CALL (n, r, x) {{\n"
        f"  WITH n, r, x WHERE x IS NOT NULL\n"
        f"  MERGE {pattern_new}\n"
        f"  SET rel.{VERSION} = r.v }}\n"
        f"CALL (n, r, x) {{\n"
        f"  WITH n, r, x WHERE x IS NULL\n"
        f"  CREATE (:{PENDING_LABEL} {{{DEF}: $def, {OWNER}: r.o, {WAIT}: r.w, {VERSION}: r.v, "
        f"{_slots('a', len(table.key_props), 'r.k')}, {_slots('b', len(target.props), 'r.t')}}}) }}"
    )
    resolve = (
        f"UNWIND $tokens AS token\n"
        f"MATCH (p:{PENDING_LABEL} {{{WAIT}: token}}) WHERE p.{DEF} = $def\n"
        f"MATCH (n:{label} {_slot_map(table.key_props, 'a')})\n"
        f"MATCH (x:{tlabel} {_slot_map(target.props, 'b')})\n"
        f"MERGE {pattern_new}\n"
        f"SET rel.{VERSION} = p.{VERSION}\n"
        f"DELETE p"
    )
    wait = (
        f"UNWIND $rows AS r\n"
        f"CREATE (:{PENDING_LABEL} {{{DEF}: $def, {OWNER}: r.o, {WAIT}: r.w, {VERSION}: r.v, "
        f"{_slots('a', len(table.key_props), 'r.k')}, {_slots('b', len(target.props), 'r.t')}}})"
    )
    incoming = (
        f"UNWIND $rows AS r\n"
        f"MATCH (x:{tlabel} {_key_map(rel.target_key_props, 'r.k')})\n"
        f"WHERE {_deleting('x')}\n"
        f"MATCH {pattern_old.replace('(n)', f'(n:{label})')}\n"
        f"RETURN old.{VERSION} AS v, {key_list('n', table.key_props)} AS a, {key_list('x', target.props)} AS b"
    )
    return AwaitingLink(write, resolve, wait, incoming)


def _deleting(var: str) -> str:
    """A node the awaiting delete of row `r` will delete (see `awaiting_node_delete`)."""
    return f"{_guard(var, 'r.v')} AND NOT EXISTS {{ ({var})-[y]-() WHERE y.{VERSION} > r.v }}"


@dataclass(frozen=True)
class AwaitingJoin:
    """The statements of one join table's relationships when endpoints may arrive later."""

    forget: str  # drop the pending relationship of a row that changes or goes
    upsert: str
    resolve: str
    wait: str  # make pending relationships of given rows ({key, v, w, aw, bw, a, b, p})
    incoming_start: str  # relationships out of start nodes about to be deleted (rows {k, v}: the start's key)
    incoming_end: str  # relationships into end nodes about to be deleted


def awaiting_join_statements(table: JoinTable, start: Lookup, end: Lookup) -> AwaitingJoin:
    rtype = q(table.type)
    forget = (
        f"UNWIND $rows AS r\n"
        f"MATCH (p:{PENDING_LABEL} {{{REL_KEY}: r.key}}) WHERE p.{DEF} = $def AND p.{VERSION} <= r.v\n"
        f"DELETE p"
    )
    props = ", ".join(f".{q(p)}" for p in table.props)
    projection = f"p {{{props}}}" if props else "{}"
    upsert = (
        f"{_after_cut(table.type)}"
        f"UNWIND $rows AS r\n"
        f"WITH r WHERE r.v > cut\n"
        f"OPTIONAL MATCH (a:{q(start.label)} {_key_map(start.props, 'r.a')})\n"
        f"OPTIONAL MATCH (b:{q(end.label)} {_key_map(end.props, 'r.b')})\n"
        f"CALL (a, b, r) {{\n"
        f"  WITH a, b, r WHERE a IS NOT NULL AND b IS NOT NULL\n"
        f"  MERGE (a)-[rel:{rtype} {{{REL_KEY}: r.key}}]->(b)\n"
        f"  WITH rel, r WHERE {_guard('rel', 'r.v')}\n"
        f"  SET rel = r.p, rel.{REL_KEY} = r.key, rel.{VERSION} = r.v, rel.{SYNCED_AT} = $synced_at\n"
        f"  RETURN count(*) AS written }}\n"
        f"CALL (a, b, r) {{\n"
        f"  WITH a, b, r WHERE a IS NULL OR b IS NULL\n"
        f"  CREATE (p:{PENDING_LABEL} {{{DEF}: $def, {REL_KEY}: r.key, {VERSION}: r.v, "
        f"{WAIT}: CASE WHEN a IS NULL THEN r.aw ELSE r.bw END, {INTERNAL_PREFIX}aw: r.aw, {INTERNAL_PREFIX}bw: r.bw, "
        f"{_slots('a', len(start.props), 'r.a')}, {_slots('b', len(end.props), 'r.b')}}})\n"
        f"  SET p += r.p\n"
        f"  RETURN count(*) AS waiting }}\n"
        f"RETURN sum(written) + sum(waiting) AS applied"
    )
    resolve = (
        f"UNWIND $tokens AS token\n"
        f"MATCH (p:{PENDING_LABEL} {{{WAIT}: token}}) WHERE p.{DEF} = $def\n"
        f"OPTIONAL MATCH (a:{q(start.label)} {_slot_map(start.props, 'a')})\n"
        f"OPTIONAL MATCH (b:{q(end.label)} {_slot_map(end.props, 'b')})\n"
        f"CALL (p, a, b) {{\n"
        f"  WITH p, a, b WHERE a IS NOT NULL AND b IS NOT NULL\n"
        f"  MERGE (a)-[rel:{rtype} {{{REL_KEY}: p.{REL_KEY}}}]->(b)\n"
        f"  SET rel = {projection}, rel.{REL_KEY} = p.{REL_KEY}, rel.{VERSION} = p.{VERSION}, "
        f"rel.{SYNCED_AT} = $synced_at\n"
        f"  DELETE p }}\n"
        f"CALL (p, a, b) {{\n"
        f"  WITH p, a, b WHERE a IS NULL OR b IS NULL\n"
        f"  SET p.{WAIT} = CASE WHEN a IS NULL THEN p.{INTERNAL_PREFIX}aw ELSE p.{INTERNAL_PREFIX}bw END }}"
    )
    wait = (
        f"UNWIND $rows AS r\n"
        f"CREATE (p:{PENDING_LABEL} {{{DEF}: $def, {REL_KEY}: r.key, {VERSION}: r.v, {WAIT}: r.w, "
        f"{INTERNAL_PREFIX}aw: r.aw, {INTERNAL_PREFIX}bw: r.bw, "
        f"{_slots('a', len(start.props), 'r.a')}, {_slots('b', len(end.props), 'r.b')}}})\n"
        f"SET p += r.p"
    )

    rel_props = f"rel {{{props}}}" if props else "{}"

    def incoming(side: str, key_props: tuple[str, ...]) -> str:
        a = f"(a:{q(start.label)})" if side == "end" else f"(a:{q(start.label)} {_key_map(key_props, 'r.k')})"
        b = f"(b:{q(end.label)})" if side == "start" else f"(b:{q(end.label)} {_key_map(key_props, 'r.k')})"
        x = "a" if side == "start" else "b"
        return (
            f"UNWIND $rows AS r\n"
            f"MATCH {a}-[rel:{rtype}]->{b}\n"
            f"WHERE {_deleting(x)}\n"
            f"RETURN rel.{REL_KEY} AS key, rel.{VERSION} AS v, {key_list('a', start.props)} AS a, "
            f"{key_list('b', end.props)} AS b, {rel_props} AS p"
        )

    return AwaitingJoin(
        forget, upsert, resolve, wait, incoming("start", table.start.key_props), incoming("end", table.end.key_props)
    )


def _after_cut(name: str) -> str:
    """The prefix that drops rows at or below the label's or type's last TRUNCATE (`$cut` names it): an event from
    before a TRUNCATE in another partition may arrive after it."""
    return f"OPTIONAL MATCH (cut:{TRUNCATED_LABEL} {{name: $cut}})\nWITH coalesce(cut.epoch, -1) AS cut\n"


def awaiting_node_upsert(table: NodeTable) -> str:
    label = q(table.label)
    extra = "".join(f":{q(lbl)}" for lbl in table.labels[1:])
    set_extra = f"\nSET n{extra}" if extra else ""
    return (
        f"{_after_cut(table.label)}"
        f"UNWIND $rows AS r\n"
        f"WITH r WHERE r.v > cut\n"
        f"MERGE (n:{label} {_key_map(table.key_props, 'r.k')})\n"
        f"WITH n, r WHERE {_guard('n', 'r.v')}\n"
        f"SET n = r.p, n.{VERSION} = r.v, n.{SYNCED_AT} = $synced_at{epoch_sets(table.epoch_props)}{set_extra}\n"
        f"RETURN count(*) AS applied"
    )


TRUNCATE_MARK: LiteralString = (
    f"MERGE (t:{TRUNCATED_LABEL} {{name: $cut}})\n"
    f"SET t.epoch = CASE WHEN t.epoch IS NULL OR t.epoch < $epoch THEN $epoch ELSE t.epoch END"
)
TRUNCATED_CONSTRAINT: LiteralString = (
    f"CREATE CONSTRAINT `pg2neo_truncated_name` IF NOT EXISTS FOR (t:{TRUNCATED_LABEL}) REQUIRE t.name IS UNIQUE"
)


def awaiting_truncate(entry: NodeTable | JoinTable) -> str:
    """Delete what a TRUNCATE removed: the rows written up to it (later ones, from other partitions, stay)."""
    if isinstance(entry, NodeTable):
        return (
            f"MATCH (n:{q(entry.label)}) WHERE n.{VERSION} <= $epoch\n"
            f"CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 10000 ROWS"
        )
    return (
        f"MATCH ()-[r:{q(entry.type)}]->() WHERE r.{VERSION} <= $epoch\n"
        f"CALL (r) {{ DELETE r }} IN TRANSACTIONS OF 10000 ROWS"
    )


# The pending relationships of the definitions starting with `$prefix`, up to a TRUNCATE.
TRUNCATE_PENDING: LiteralString = (
    f"MATCH (p:{PENDING_LABEL}) WHERE p.{DEF} STARTS WITH $prefix AND p.{VERSION} <= $epoch\n"
    f"CALL (p) {{ DELETE p }} IN TRANSACTIONS OF 10000 ROWS"
)


def awaiting_node_lock(table: NodeTable) -> str:
    """Take the write locks of the nodes a delete is about to remove, before the relationships into them are read
    (`incoming`): a concurrent delete of one of those relationships (another worker, another topic) locks both its
    ends, so it either commits before the read (the relationship is gone, nothing waits) or waits for this
    transaction, after which its `forget` finds the pending relationship made here and removes it."""
    lock = f"{INTERNAL_PREFIX}lock"
    return (
        f"UNWIND $rows AS r\nMATCH (n:{q(table.label)} {_key_map(table.key_props, 'r.k')})\n"
        f"SET n.{lock} = true\nREMOVE n.{lock}"
    )


def awaiting_node_delete(table: NodeTable) -> str:
    """Delete nodes under the version guard, except one that a newer relationship points at (its row came back)."""
    label = q(table.label)
    return (
        f"UNWIND $rows AS r\nMATCH (n:{label} {_key_map(table.key_props, 'r.k')})\n"
        f"WITH r, n, {_guard('n', 'r.v')} AS ok, EXISTS {{ (n)-[x]-() WHERE x.{VERSION} > r.v }} AS newer\n"
        f"CALL (n, ok, newer) {{ WITH n WHERE ok AND NOT newer DETACH DELETE n }}\n"
        f"RETURN count(CASE WHEN NOT ok THEN r END) AS refused"
    )


FORGET_OWNED: LiteralString = (
    f"UNWIND $rows AS r\nMATCH (p:{PENDING_LABEL} {{{OWNER}: r.o}}) WHERE p.{VERSION} <= r.v\nDELETE p"
)
