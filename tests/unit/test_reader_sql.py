"""Unit tests of the reader's SQL (`pg2neo.apply.reader`, no servers): the statements rendered with `as_string()`.

Every read selects the key as text (the text the triggers queue), the mapped columns, then each relationship's
target node key: straight from the row when the foreign key references that key, through a LEFT JOIN when it
references another unique column (an inner join would drop a row with a NULL foreign key, and its key would be
taken for a delete). Pages are keyset pages in key order.
"""

from __future__ import annotations

from pathlib import Path

from plan_builder import col, plan, schema_plan, table

from pg2neo.apply.reader import by_keys_query, page_keys_query, page_query
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable


def entry(mapping: Mapping, name: str) -> NodeTable | JoinTable:
    found = mapping.entry(f"public.{name}")
    assert found is not None
    return found


def statement(*parts: str) -> str:
    return "".join(parts)


PROJECTS_FIELDS = 'ARRAY["t"."id"::text], "t"."id", "t"."tenant_id", "t"."title", "t"."tenant_id"'


def test_node_table_by_keys_and_by_page(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    projects = entry(mapping, "projects")
    assert by_keys_query(mapping, projects).as_string() == statement(
        "SELECT ",
        PROJECTS_FIELDS,
        ' FROM "public"."projects" AS t ',
        'JOIN unnest(%s::text[]) AS k("k0") ON t."id" = k."k0"::bigint ',
    )
    assert page_query(mapping, projects, after=True).as_string() == statement(
        "SELECT ",
        PROJECTS_FIELDS,
        ' FROM "public"."projects" AS t  ',
        'WHERE (t."id") > (%s::bigint) ORDER BY t."id" LIMIT %s',
    )
    assert page_query(mapping, projects, after=False).as_string() == statement(
        "SELECT ",
        PROJECTS_FIELDS,
        ' FROM "public"."projects" AS t   ORDER BY t."id" LIMIT %s',
    )
    assert page_keys_query(projects, after=True).as_string() == (
        'SELECT ARRAY["t"."id"::text] FROM "public"."projects" AS t WHERE (t."id") > (%s::bigint) '
        'ORDER BY t."id" LIMIT %s'
    )


def test_composite_key_in_column_order(tmp_path: Path) -> None:
    readings = table("readings", [col("id"), col("region", "text"), col("v", "float8")], key=("id", "region"))
    mapping = plan(tmp_path, "nodes: [{table: readings}]\n", readings)
    node = entry(mapping, "readings")
    fields = 'ARRAY["t"."id"::text, "t"."region"::text], "t"."id", "t"."region", "t"."v"'
    assert by_keys_query(mapping, node).as_string() == statement(
        "SELECT ",
        fields,
        ' FROM "public"."readings" AS t ',
        'JOIN unnest(%s::text[], %s::text[]) AS k("k0", "k1") ',
        'ON t."id" = k."k0"::bigint AND t."region" = k."k1"::text ',
    )
    assert page_query(mapping, node, after=True).as_string() == statement(
        "SELECT ",
        fields,
        ' FROM "public"."readings" AS t  ',
        'WHERE (t."id", t."region") > (%s::bigint, %s::text) ORDER BY t."id", t."region" LIMIT %s',
    )
    assert page_keys_query(node, after=False).as_string() == (
        'SELECT ARRAY["t"."id"::text, "t"."region"::text] FROM "public"."readings" AS t  '
        'ORDER BY t."id", t."region" LIMIT %s'
    )


def test_join_table_reads_its_key_properties_and_both_endpoints(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    tagged = entry(mapping, "tagged")
    fields = 'ARRAY["t"."id"::text], "t"."id", "t"."weight", "t"."project_id", "t"."tenant_id"'
    assert by_keys_query(mapping, tagged).as_string() == statement(
        "SELECT ",
        fields,
        ' FROM "public"."tagged" AS t JOIN unnest(%s::text[]) AS k("k0") ON t."id" = k."k0"::bigint ',
    )
    assert page_query(mapping, tagged, after=True).as_string() == statement(
        "SELECT ",
        fields,
        ' FROM "public"."tagged" AS t  WHERE (t."id") > (%s::bigint) ORDER BY t."id" LIMIT %s',
    )


def test_foreign_key_through_a_non_key_column_left_joins_the_target(tmp_path: Path) -> None:
    mapping = schema_plan(tmp_path)
    chunks = entry(mapping, "chunks")
    fields = 'ARRAY["t"."id"::text], "t"."id", "t"."item_id", "t"."n", "j0"."node_id"'
    join = 'LEFT JOIN "public"."items" AS "j0" ON "j0"."id" = t."item_id"'
    assert by_keys_query(mapping, chunks).as_string() == statement(
        "SELECT ",
        fields,
        ' FROM "public"."chunks" AS t JOIN unnest(%s::text[]) AS k("k0") ON t."id" = k."k0"::bigint ',
        join,
    )
    assert page_query(mapping, chunks, after=False).as_string() == statement(
        "SELECT ",
        fields,
        ' FROM "public"."chunks" AS t ',
        join,
        '  ORDER BY t."id" LIMIT %s',
    )
    # the keys of a page need no join
    assert page_keys_query(chunks, after=False).as_string() == (
        'SELECT ARRAY["t"."id"::text] FROM "public"."chunks" AS t  ORDER BY t."id" LIMIT %s'
    )
