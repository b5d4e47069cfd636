"""Unit tests of the pure resolver (mapping/resolve.py) on hand-built catalog snapshots (no servers).

Place in the data flow: the very start. Keys, foreign-key relationships (also through a unique column that is not
the primary key), join tables, labels, partitioned tables' keys, and a refused mapping with its exact message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from plan_builder import PROJECTS, SCHEMA, TENANTS, col, fk, plan, schema_plan, table

from pg2neo.capture.triggers import table_statements
from pg2neo.errors import MappingError
from pg2neo.mapping.model import MappingFile
from pg2neo.mapping.plan import Column, Endpoint, ForeignKeyRel, SelectAs, ValueKind
from pg2neo.mapping.resolve import named_tables


def test_keys_labels_and_columns_of_node_tables(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    assert [n.table for n in mapping.nodes] == ["public.tenants", "public.projects", "public.items", "public.chunks"]
    tenants = mapping.node("public.tenants")
    assert tenants.labels == ("Tenants",)  # the default label: the table name in CamelCase
    assert (tenants.key_columns, tenants.key_props, tenants.key_types) == (("id",), ("id",), ("bigint",))
    assert tenants.columns == (
        Column("id", "id", "bigint", ValueKind.INT, SelectAs.RAW),
        Column("name", "name", "text", ValueKind.TEXT, SelectAs.RAW),
    )
    items = mapping.node("public.items")  # the primary key (node_id) under another property name
    assert (items.key_columns, items.key_props, items.key_types) == (("node_id",), ("id",), ("uuid",))
    assert [(c.name, c.prop) for c in items.columns] == [("node_id", "id"), ("id", "pg_id"), ("body", "body")]
    assert items.line == 6


def test_foreign_key_on_the_key_and_through_a_unique_non_key_column(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    assert mapping.node("public.projects").fk_rels == (
        ForeignKeyRel("OWNED_BY", ("tenant_id",), "public.tenants", "Tenants", ("id",), ("id",), ("id",), "out"),
    )
    (has_chunk,) = mapping.node("public.chunks").fk_rels
    # chunks.item_id references items.id, unique but not the node key: the reader joins to read node_id
    assert has_chunk == ForeignKeyRel(
        "HAS_CHUNK", ("item_id",), "public.items", "Items", ("id",), ("id",), ("node_id",), "in"
    )
    assert has_chunk.needs_join


def test_join_table_with_its_own_key(tmp_path: Path) -> None:
    (join,) = schema_plan(tmp_path).joins
    assert (join.table, join.type, join.key_columns, join.key_types) == (
        "public.tagged",
        "TAGGED",
        ("id",),
        ("bigint",),
    )
    assert join.start == Endpoint("public.projects", "Projects", ("id",), ("project_id",), ("id",), ("id",))
    assert join.end == Endpoint("public.tenants", "Tenants", ("id",), ("tenant_id",), ("id",), ("id",))
    # endpoint columns are never properties; numeric compares as text in the trigger (1.5 = 1.50)
    assert [(c.name, c.kind, c.comparable) for c in join.columns] == [
        ("id", ValueKind.INT, True),
        ("weight", ValueKind.NUMERIC, False),
    ]
    assert join.props == ("id", "weight")


def test_join_table_keyed_by_its_endpoints_reads_its_key_without_making_it_properties(tmp_path: Path) -> None:
    wrote = table(
        "wrote",
        [col("project_id"), col("tenant_id")],
        key=("project_id", "tenant_id"),
        fks=(fk(("project_id",), "projects"), fk(("tenant_id",), "tenants")),
    )
    mapping = plan(
        tmp_path,
        """
        nodes: [{table: tenants}, {table: projects}]
        relationships:
          - {table: wrote, type: WROTE, from: {table: projects, columns: project_id},
             to: {table: tenants, columns: tenant_id}}
        """,
        TENANTS,
        PROJECTS,
        wrote,
    )
    (join,) = mapping.joins
    assert join.props == ()
    assert [c.name for c in join.columns] == ["project_id", "tenant_id"]  # read for the key, not stored


def test_labels_and_key_types(tmp_path: Path) -> None:
    mapping = plan(
        tmp_path,
        """
        nodes:
          - {table: tenants, labels: [Tenant, Party]}
          - {table: projects, label: Project, properties: {types: {title: json}}}
        """,
        TENANTS,
        PROJECTS,
    )
    assert mapping.node("public.tenants").labels == ("Tenant", "Party")
    assert mapping.node("public.tenants").label == "Tenant"
    title = mapping.node("public.projects").columns[-1]
    assert (title.kind, title.select_as) == (ValueKind.JSON, SelectAs.JSONB_TEXT)


def test_excluded_foreign_key_column_is_still_watched_by_the_update_trigger(tmp_path: Path) -> None:
    mapping = plan(
        tmp_path,
        """
        nodes:
          - table: tenants
          - table: projects
            properties: {exclude: [tenant_id]}
            relationships: [{type: OWNED_BY, columns: tenant_id, to: tenants}]
        """,
        TENANTS,
        PROJECTS,
    )
    projects = mapping.node("public.projects")
    assert [c.name for c in projects.columns] == ["id", "title"]
    assert projects.fk_rels[0].columns == ("tenant_id",)
    update = table_statements(projects)[6].as_string()
    assert (
        'WHEN (ROW(OLD."id", OLD."title", OLD."tenant_id") IS DISTINCT FROM '
        'ROW(NEW."id", NEW."title", NEW."tenant_id"))' in update
    )


PARTITIONED = table(  # a partitioned table's primary key must hold its partition column
    "readings", [col("id"), col("region", "text"), col("v", "float8")], key=("id", "region")
)


def test_partitioned_table_keeps_its_composite_key(tmp_path: Path) -> None:
    node = plan(tmp_path, "nodes: [{table: readings}]\n", PARTITIONED).node("public.readings")
    assert (node.key_columns, node.key_props, node.key_types) == (
        ("id", "region"),
        ("id", "region"),
        ("bigint", "text"),
    )


def test_partitioned_table_refuses_a_key_without_its_partition_column(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as exc:
        plan(tmp_path, "nodes: [{table: readings, key: id}]\n", PARTITIONED)
    assert str(exc.value) == (
        "the mapping does not match the database:\n"
        f"  {tmp_path / 'pg2neo.yaml'}:1: key (id) of `public.readings` is not unique and NOT NULL in PostgreSQL; "
        "use the primary key (id, region) or add a unique constraint on it"
    )


def test_refused_mapping_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as exc:
        plan(
            tmp_path,
            """
            nodes:
              - table: tenant
              - table: chunks
                relationships:
                  - {type: HAS_CHUNK, columns: item_id, to: projects}
              - table: projects
            """,
            *SCHEMA,
        )
    path = tmp_path / "pg2neo.yaml"
    assert str(exc.value) == (
        "the mapping does not match the database:\n"
        f"  {path}:2: unknown table `public.tenant`; did you mean `tenants`?\n"
        f"  {path}:5: no foreign key (item_id) -> `public.projects` exists on `public.chunks`; "
        "add the constraint or use one of: item_id -> public.items"
    )


def test_named_tables_are_what_the_catalog_snapshot_reads() -> None:
    spec = MappingFile.model_validate(
        {
            "schema": "app",
            "nodes": [
                {"table": "tenants"},
                {"table": "other.projects", "relationships": [{"type": "OWNED_BY", "columns": "t", "to": "tenants"}]},
            ],
            "relationships": [
                {
                    "table": "tagged",
                    "type": "T",
                    "from": {"table": "a", "columns": "a"},
                    "to": {"table": "b", "columns": "b"},
                }
            ],
        }
    )
    assert named_tables(spec) == [("app", "tenants"), ("other", "projects"), ("app", "tagged")]
