"""Unit tests of apply/cypher.py: the Cypher generated per mapped table (no servers).

Place in the data flow: the apply stage. Labels, relationship types and property names come only from the checked
mapping and are backquoted; every value travels as a parameter. Names that could break out of the quoting are
rejected earlier, by the mapping's validation (mapping/resolve.py), which these tests also exercise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pg2neo.apply.cypher import (
    CHECKPOINT,
    CHECKPOINT_LABEL,
    DELETE_REL_BY_ELEMENT_ID,
    EPOCH_LABEL,
    HASH_PROP,
    INTERNAL_PREFIX,
    MARKER_CONSTRAINT,
    MARKER_CREATE,
    MARKER_LABEL,
    MARKER_VETO,
    MARKERS_AMONG,
    MARKERS_DELETE,
    MARKERS_IN_SCOPE,
    REL_KEY,
    SYNCED_AT,
    VERSION,
    constraint_statement,
    count_label_query,
    count_type_query,
    delete_join_query,
    delete_node_by_key_text_query,
    fk_items_query,
    graph_props,
    join_items_query,
    join_props_query,
    join_statements,
    node_items_query,
    node_props_query,
    node_statements,
    q,
    recently_synced_query,
    synced_at_query,
)
from pg2neo.mapping.model import LineIndex
from pg2neo.mapping.plan import Column, Endpoint, ForeignKeyRel, JoinTable, NodeTable, SelectAs, ValueKind
from pg2neo.mapping.resolve import IDENTIFIER, _check_identifier, _Problems


def _col(name: str, prop: str | None = None) -> Column:
    return Column(name, prop or name, "text", ValueKind.TEXT, SelectAs.RAW)


WAREHOUSE = NodeTable(
    table="public.warehouses",
    schema="public",
    name="warehouses",
    labels=("Warehouse", "Site"),
    key_columns=("region_code", "num"),
    key_props=("region", "number"),
    key_types=("text", "integer"),
    columns=(_col("region_code", "region"), _col("num", "number"), _col("label")),
    fk_rels=(
        ForeignKeyRel(
            type="IN_REGION",
            columns=("region_code",),
            target_table="public.regions",
            target_label="Region",
            target_key_props=("code",),
            ref_columns=("code",),
            target_key_columns=("code",),
            direction="out",
        ),
        ForeignKeyRel(
            type="MANAGES",
            columns=("manager",),
            target_table="public.people",
            target_label="Person",
            target_key_props=("id",),
            ref_columns=("id",),
            target_key_columns=("id",),
            direction="in",
        ),
    ),
)

STOCK = JoinTable(
    table="public.stock",
    schema="public",
    name="stock",
    type="STOCKS",
    key_columns=("wh_region", "wh_num", "sku"),
    key_types=("text", "integer", "text"),
    start=Endpoint(
        "public.warehouses", "Warehouse", ("region", "number"), ("wh_region", "wh_num"), ("a", "b"), ("a", "b")
    ),
    end=Endpoint("public.items", "Item", ("sku",), ("sku",), ("sku",), ("sku",)),
    columns=(_col("qty"),),
    props=("qty",),
)

# A literal value in Cypher: a quoted string or a number not preceded by an identifier character or `[`.
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"|(?<![\w\[$])\d+(?![\w\]])")


def _all_statements() -> list[str]:
    n = node_statements(WAREHOUSE)
    j = join_statements(STOCK)
    return [n.upsert, n.delete, n.truncate, *n.links, j.clear, j.upsert, j.truncate, j.index, CHECKPOINT]


def test_labels_types_and_properties_are_backquoted() -> None:
    n = node_statements(WAREHOUSE)
    assert "MERGE (n:`Warehouse` {`region`: r.k[0], `number`: r.k[1]})" in n.upsert
    assert "SET n:`Site`" in n.upsert  # the extra label
    assert "MATCH (n:`Warehouse` {`region`: k[0], `number`: k[1]})" in n.delete
    assert "DETACH DELETE n" in n.delete
    out_link, in_link = n.links
    assert "(n)-[old:`IN_REGION`]->(x)" in out_link and "MERGE (x:`Region` {`code`: r.t[0]})" in out_link
    assert "(n)<-[:`MANAGES`]-(x)" in in_link  # direction: in
    j = join_statements(STOCK)
    assert "MERGE (a)-[rel:`STOCKS` {_pg2neo_key: r.key}]->(b)" in j.upsert
    assert "MERGE (a:`Warehouse` {`region`: r.a[0], `number`: r.a[1]})" in j.upsert
    assert constraint_statement(WAREHOUSE) == (
        "CREATE CONSTRAINT `pg2neo_Warehouse_key` IF NOT EXISTS FOR (n:`Warehouse`) REQUIRE (n.`region`, n.`number`) "
        "IS UNIQUE"
    )


MARKER_STATEMENTS = [MARKER_CONSTRAINT, MARKER_CREATE, MARKER_VETO, MARKERS_IN_SCOPE, MARKERS_AMONG, MARKERS_DELETE]


def _read_statements() -> list[str]:
    """What verify, recent checks, repairs and counts run."""
    in_region, manages = WAREHOUSE.fk_rels
    return [
        node_items_query(WAREHOUSE),
        node_items_query(WAREHOUSE, among_keys=True),
        fk_items_query(WAREHOUSE, in_region),
        fk_items_query(WAREHOUSE, manages, among_keys=True),
        join_items_query(STOCK),
        recently_synced_query(WAREHOUSE),
        synced_at_query(WAREHOUSE),
        node_props_query(WAREHOUSE),
        join_props_query(STOCK),
        delete_join_query(STOCK),
        delete_node_by_key_text_query(WAREHOUSE),
        DELETE_REL_BY_ELEMENT_ID,
        count_label_query("Warehouse"),
        count_type_query("STOCKS"),
    ]


def test_reserved_names_share_the_internal_prefix() -> None:
    for name in (VERSION, SYNCED_AT, REL_KEY, HASH_PROP):
        assert name.startswith(INTERNAL_PREFIX)
    assert graph_props({"a": 1, VERSION: 2, SYNCED_AT: 3, REL_KEY: "k", HASH_PROP: "h"}) == {"a": 1}
    assert {CHECKPOINT_LABEL, EPOCH_LABEL, MARKER_LABEL} == {"_Pg2neoCheckpoint", "_Pg2neoEpoch", "_Pg2neoTx"}
    assert all(f"(m:{MARKER_LABEL}" in s or f"(:{MARKER_LABEL}" in s for s in MARKER_STATEMENTS)


def test_read_statements_backquote_names_and_filter_by_parameters() -> None:
    nodes, among, out_fk, in_fk, joins, recent, synced, props, join_props, *_ = _read_statements()
    assert nodes.startswith("MATCH (n:`Warehouse`)") and "RETURN [n.`region`, n.`number`] AS k" in nodes
    assert "WHERE [n.`region`, n.`number`] IN $keys" in among and "WHERE" not in nodes
    assert "-[r:`IN_REGION`]->(x:`Region`)" in out_fk and "<-[r:`MANAGES`]-(x:`Person`)" in in_fk
    assert "[x.`code`] AS t" in out_fk and "IN $keys" in in_fk
    assert f"r.{REL_KEY} AS key" in joins and "(b:`Item`)" in joins
    assert f"n.{SYNCED_AT} >= datetime() - duration({{seconds: $s}})" in recent
    assert "IN $keys" in synced and f"n.{SYNCED_AT} AS synced" in synced
    assert "MATCH (n:`Warehouse` {`region`: $k[0], `number`: $k[1]})" in props
    assert f"[r:`STOCKS` {{{REL_KEY}: $rk}}]" in join_props


def test_values_travel_only_as_parameters() -> None:
    for statement in [*_all_statements(), *_read_statements(), *MARKER_STATEMENTS]:
        literals = [m for m in _LITERAL.findall(statement) if m not in ("10000",)]  # the IN TRANSACTIONS chunk size
        assert literals == [], f"literal value in generated Cypher: {literals} in\n{statement}"
    n = node_statements(WAREHOUSE)
    assert "$rows" in n.upsert and "$epoch" in n.upsert and "$synced_at" in n.upsert
    assert "$keys" in n.delete


def test_version_guard_keeps_older_reads_out() -> None:
    n = node_statements(WAREHOUSE)
    guard = f"(n.{VERSION} IS NULL OR n.{VERSION} <= $epoch)"
    assert guard in n.upsert and guard in n.delete
    j = join_statements(STOCK)
    assert f"(rel.{VERSION} IS NULL OR rel.{VERSION} <= $epoch)" in j.upsert
    assert f"rel.{REL_KEY} = r.key" in j.upsert


def test_q_doubles_backquotes() -> None:
    assert q("Plain") == "`Plain`"
    assert q("a`b") == "`a``b`"


@pytest.mark.parametrize(
    "name", ["Bad`Label", "Has Space", "x) DETACH DELETE (y", "1starts_with_digit", "dash-ed", "ünï", ""]
)
def test_unsafe_names_are_rejected_by_validation(name: str) -> None:
    assert not IDENTIFIER.match(name)
    problems = _Problems(LineIndex(Path("m.yaml")))
    _check_identifier(problems, ("nodes", 0, "label"), "label", name)
    [message] = problems.items
    assert message.startswith("m.yaml:1: invalid label")
    fixed = re.search(r"e\.g\. `([^`]*)`", message)
    assert fixed is not None and IDENTIFIER.match(fixed.group(1)), message


def test_reserved_prefix_is_rejected() -> None:
    problems = _Problems(LineIndex(Path("m.yaml")))
    _check_identifier(problems, ("nodes", 0, "label"), "label", "_Pg2neoCheckpoint")
    assert problems.items and "reserves" in problems.items[0]


@pytest.mark.parametrize("name", ["Tenant", "HAS_CHUNK", "_private", "x1"])
def test_ordinary_names_pass(name: str) -> None:
    problems = _Problems(LineIndex(Path("m.yaml")))
    _check_identifier(problems, ("nodes", 0, "label"), "label", name)
    assert problems.items == []
