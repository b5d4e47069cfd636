"""Unit tests of `pg2neo.apply.batch.BatchBuilder` (no servers): rows as the reader selects them -> one `GraphBatch`.

A row read for a key is an upsert carrying its properties' hash; a key whose row is gone is a delete; each foreign
key gives a link (NULL: no target); join rows are keyed by their row key; a value Neo4j cannot store makes its row a
`RowFailure` naming the column, and the rest of the batch goes on.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

from plan_builder import schema_plan

from pg2neo.apply.batch import BatchBuilder, GraphBatch, RowFailure, rel_key
from pg2neo.apply.cypher import HASH_PROP
from pg2neo.mapping.hashing import props_hash_hex
from pg2neo.mapping.plan import Mapping

ITEM = uuid.UUID("6f1c2c8e-2b1a-4a53-9a55-0d5c7a3f9e01")


def build(mapping: Mapping, rows: dict[str, list[tuple[object, ...]]]) -> GraphBatch:
    builder = BatchBuilder(mapping)
    batch = builder.new_batch()
    for table, table_rows in rows.items():
        entry = mapping.entry(f"public.{table}")
        assert entry is not None
        builder.add_rows(batch, entry, table_rows)
    return batch


def test_node_upserts_carry_their_hash_and_links(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    # projects: key text, then id, tenant_id, title, then the tenant's node key (OWNED_BY)
    batch = build(mapping, {"projects": [(["1"], 1, 7, "alpha", 7), (["2"], 2, None, "beta", None)]})
    writes = batch.nodes["public.projects"]
    alpha = {"id": 1, "tenant_id": 7, "title": "alpha"}
    beta = {"id": 2, "title": "beta"}  # a NULL is no property
    assert writes.upserts == [
        {"k": [1], "p": {**alpha, HASH_PROP: props_hash_hex(alpha)}},
        {"k": [2], "p": {**beta, HASH_PROP: props_hash_hex(beta)}},
    ]
    assert props_hash_hex(alpha) != props_hash_hex(beta)
    assert writes.links == [[{"k": [1], "t": [7]}, {"k": [2], "t": None}]]  # a NULL foreign key: no target
    assert writes.deletes == [] and batch.joins == {} and batch.failures == []


def test_link_through_a_non_key_column_points_at_the_target_node_key(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    # chunks: key text, id, item_id, n, then the item's node key (node_id, read through the join on items.id)
    batch = build(mapping, {"chunks": [(["9"], 9, 3, 1, ITEM)]})
    writes = batch.nodes["public.chunks"]
    assert writes.links == [[{"k": [9], "t": [str(ITEM)]}]]
    assert writes.upserts[0]["k"] == [9]


def test_join_rows_are_keyed_by_their_row_key(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    # tagged: key text, id, weight, then the project's and the tenant's node keys
    batch = build(mapping, {"tagged": [(["5"], 5, Decimal("2.5"), 1, 7), (["6"], 6, Decimal("1"), 1, None)]})
    writes = batch.joins["public.tagged"]
    assert rel_key(["5"]) == '["5"]'
    assert writes.upserts == [{"key": '["5"]', "a": [1], "b": [7], "p": {"id": 5, "weight": 2.5}}]
    assert writes.deletes == ['["6"]']  # an endpoint is NULL: the row draws no relationship, an earlier one goes


def test_deletes_convert_node_keys_from_their_text(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    builder = BatchBuilder(mapping)
    batch = builder.new_batch()
    builder.add_deletes(batch, mapping.node("public.items"), [(str(ITEM),)])
    builder.add_deletes(batch, mapping.node("public.tenants"), [("7",), ("not a number",)])
    tagged = mapping.entry("public.tagged")
    assert tagged is not None
    builder.add_deletes(batch, tagged, [("6",)])
    assert batch.nodes["public.items"].deletes == [[str(ITEM)]]
    assert batch.nodes["public.tenants"].deletes == [[7]]
    assert batch.joins["public.tagged"].deletes == ['["6"]']
    (failure,) = batch.failures
    assert (failure.table, failure.key, failure.payload) == ("public.tenants", ("not a number",), {})
    assert failure.reason.startswith("column `id`: the key 'not a number' has no Neo4j equivalent")


def test_an_unstorable_value_makes_its_row_a_failure_naming_the_column(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    batch = build(mapping, {"tagged": [(["5"], 5, Decimal("1e400"), 1, 7), (["6"], 6, Decimal("3"), 1, 7)]})
    assert batch.failures == [
        RowFailure(
            "public.tagged",
            ("5",),
            "column `weight`: the value 1E+400 is beyond the range of a Neo4j Float; map the column with "
            "`types: {weight: string}` to store its exact text",
            {"id": "5", "weight": "1E+400"},
        )
    ]
    assert [u["key"] for u in batch.joins["public.tagged"].upserts] == ['["6"]']  # the rest of the batch goes on


def test_counts_by_label_type_and_dead_letters(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    builder = BatchBuilder(mapping)
    batch = build(
        mapping,
        {
            "projects": [(["1"], 1, 7, "alpha", 7), (["2"], 2, 7, "beta", 7)],
            "tagged": [(["5"], 5, Decimal("1e400"), 1, 7), (["6"], 6, Decimal("3"), 1, 7)],
        },
    )
    builder.add_deletes(batch, mapping.node("public.tenants"), [("3",)])
    assert batch.counts() == {
        "Projects:upsert": 2,
        "Tenants:delete": 1,
        "TAGGED:upsert": 1,
        "dead_letters": 1,
    }
    assert not batch.empty() and GraphBatch().empty() and GraphBatch().counts() == {}
