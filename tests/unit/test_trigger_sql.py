"""Unit tests of the generated capture SQL (`pg2neo.capture.triggers`, no servers), on plans resolved from
hand-built catalogs: what the UPDATE trigger's WHEN clause watches, the key arrays queued for composite keys, a
join table's triggers, and the re-queue of referring rows when a node key changes.
"""

from __future__ import annotations

from pathlib import Path

from plan_builder import PROJECTS, TENANTS, col, plan, schema_plan, table

from pg2neo.capture.triggers import Referrer, referrers, table_statements
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable


def entry(mapping: Mapping, name: str) -> NodeTable | JoinTable:
    found = mapping.entry(f"public.{name}")
    assert found is not None
    return found


def texts(mapping: Mapping, name: str) -> list[str]:
    table_name = f"public.{name}"
    return [s.as_string() for s in table_statements(entry(mapping, name), referrers(mapping, table_name))]


def update_when(statements: list[str]) -> str:
    (update,) = [s for s in statements if s.startswith('CREATE TRIGGER "pg2neo_capture_update" AFTER UPDATE')]
    return update.split(" WHEN (", 1)[1].split(") EXECUTE FUNCTION", 1)[0]


def test_update_trigger_watches_foreign_key_columns_not_mapped_as_properties(tmp_path: Path) -> None:
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
    assert update_when(texts(mapping, "projects")) == (
        'ROW(OLD."id", OLD."title", OLD."tenant_id") IS DISTINCT FROM ROW(NEW."id", NEW."title", NEW."tenant_id")'
    )
    # mapped as a property too: watched once
    assert update_when(texts(schema_plan(tmp_path), "projects")) == (
        'ROW(OLD."id", OLD."tenant_id", OLD."title") IS DISTINCT FROM ROW(NEW."id", NEW."tenant_id", NEW."title")'
    )


def test_composite_key_is_queued_as_one_text_array_in_key_order(tmp_path: Path) -> None:
    readings = table("readings", [col("id"), col("region", "text"), col("v", "float8")], key=("id", "region"))
    function = texts(plan(tmp_path, "nodes: [{table: readings}]\n", readings), "readings")[0]
    old, new = 'ARRAY[OLD."id"::text, OLD."region"::text]', 'ARRAY[NEW."id"::text, NEW."region"::text]'
    assert f"VALUES (''public.readings'', ''I'', {new});" in function
    assert f"VALUES (''public.readings'', ''D'', {old});" in function
    assert f"ELSIF {old} IS DISTINCT FROM {new} THEN" in function
    assert f"VALUES (''public.readings'', ''D'', {old}), (''public.readings'', ''I'', {new});" in function
    assert f"VALUES (''public.readings'', ''U'', {new});" in function
    # bigint and text keys print the same under any session settings: nothing pinned
    assert "SET search_path = pg_catalog, pg_temp  AS" in function and '"timezone"' not in function


def test_join_table_watches_its_endpoints_and_compares_numeric_as_text(tmp_path: Path) -> None:
    statements = texts(schema_plan(tmp_path), "tagged")
    assert update_when(statements) == (
        'ROW(OLD."id", OLD."weight"::text, OLD."project_id", OLD."tenant_id") IS DISTINCT FROM '
        'ROW(NEW."id", NEW."weight"::text, NEW."project_id", NEW."tenant_id")'
    )
    assert "VALUES (''public.tagged'', ''D'', ARRAY[OLD.\"id\"::text]);" in statements[0]
    assert "SELECT ''public." not in statements[0]  # nothing refers to a join table's rows
    created = [s.split(" ON ", 1)[0] for s in statements if s.startswith("CREATE TRIGGER")]
    assert created == [
        'CREATE TRIGGER "pg2neo_capture" AFTER INSERT OR DELETE',
        'CREATE TRIGGER "pg2neo_capture_update" AFTER UPDATE',
        'CREATE TRIGGER "pg2neo_capture_truncate" AFTER TRUNCATE',
    ]


def test_a_node_key_change_requeues_the_rows_that_refer_to_it_through_another_column(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    assert referrers(mapping, "public.items") == (Referrer(entry(mapping, "chunks"), ("item_id",), ("id",)),)
    assert referrers(mapping, "public.tenants") == ()  # projects and tagged refer to the tenant's key itself
    function = texts(mapping, "items")[0]
    key_change = function.split('ELSIF ARRAY[OLD."node_id"::text] IS DISTINCT FROM ARRAY[NEW."node_id"::text] THEN')[1]
    assert [line.strip() for line in key_change.split("ELSE")[0].strip().splitlines()] == [
        "INSERT INTO pg2neo.changes (tbl, op, key) VALUES (''public.items'', ''D'', ARRAY[OLD.\"node_id\"::text]), "
        "(''public.items'', ''I'', ARRAY[NEW.\"node_id\"::text]);",
        "INSERT INTO pg2neo.changes (tbl, op, key) SELECT ''public.chunks'', ''U'', ARRAY[r.\"id\"::text] "
        'FROM "public"."chunks" AS r WHERE r."item_id" = NEW."id";',
    ]
    assert "''public.chunks''" not in texts(mapping, "tenants")[0]
