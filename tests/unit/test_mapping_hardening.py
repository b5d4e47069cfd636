"""Unit tests of the mapping checks that refuse what cannot be synced faithfully (issue 14, item 4; no servers).

Place in the data flow: the very start. `resolve` checks the file against the catalog; here the catalog is a fake
built from `CatalogTable` values, so each refusal is shown with its file:line and its fix without a database:
tables that would merge into one node, relationship types two entries would delete each other's copies of, node
keys that would not stay exact, and `properties:` entries that would be silently ignored.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pg2neo.errors import MappingError
from pg2neo.mapping import resolve as resolve_module
from pg2neo.mapping.catalog import Catalog, CatalogColumn, CatalogTable, ForeignKey
from pg2neo.mapping.hashing import bucket_of
from pg2neo.mapping.model import load_file
from pg2neo.mapping.plan import Mapping, SelectAs, ValueKind
from pg2neo.reconcile.verify import ScopeReport, _collect_slots, count_collisions


def col(name: str, base: str = "int8", type_name: str | None = None, element: str | None = None) -> CatalogColumn:
    return CatalogColumn(
        name=name,
        type_name=type_name or base,
        base_type=base,
        type_kind="b",
        element_type=element,
        element_kind="b" if element else None,
        not_null=True,
        comparable=True,
    )


def table(
    name: str, columns: list[CatalogColumn], key: tuple[str, ...] = ("id",), fks: tuple[ForeignKey, ...] = ()
) -> CatalogTable:
    return CatalogTable("public", name, {c.name: c for c in columns}, key, (key,), fks)


def fk(columns: tuple[str, ...], target: str, ref: tuple[str, ...] = ("id",)) -> ForeignKey:
    return ForeignKey(f"{'_'.join(columns)}_fkey", columns, f"public.{target}", ref)


PEOPLE = [col("id"), col("name", "text")]
CATALOG = {
    "authors": table("authors", PEOPLE),
    "publishers": table("publishers", PEOPLE),
    "tenants": table("tenants", PEOPLE),
    "programs": table("programs", [*PEOPLE, col("tenant_id")], fks=(fk(("tenant_id",), "tenants"),)),
    "projects": table("projects", [*PEOPLE, col("tenant_id")], fks=(fk(("tenant_id",), "tenants"),)),
    "threads": table(
        "threads",
        [*PEOPLE, col("parent_id"), col("origin_id")],
        fks=(fk(("parent_id",), "threads"), fk(("origin_id",), "threads")),
    ),
    "wrote": table(
        "wrote",
        [col("author_id"), col("publisher_id"), col("note", "text")],
        key=("author_id", "publisher_id"),
        fks=(fk(("author_id",), "authors"), fk(("publisher_id",), "publishers")),
    ),
    "sold": table(
        "sold",
        [col("author_id"), col("publisher_id")],
        key=("author_id", "publisher_id"),
        fks=(fk(("author_id",), "authors"), fk(("publisher_id",), "publishers")),
    ),
    "amounts": table("amounts", [col("id", "numeric"), col("v", "text")]),
    "codes": table("codes", [col("id", "bpchar", "character(5)"), col("v", "text")]),
    "prices": table("prices", [col("id", "money"), col("v", "text")]),
    "grids": table("grids", [col("id", "_int4", "integer[]", element="int4"), col("v", "text")]),
    "pairs": table("pairs", [col("a", "text"), col("b", "numeric", "numeric(20,0)")], key=("a", "b")),
    "programmes": table("programmes", [*PEOPLE, col("program_id")], fks=(fk(("program_id",), "programs"),)),
    "metrics": table("metrics", [col("id", "float8"), col("small", "int4"), col("v", "text")]),
}


SNAPSHOT = Catalog({t.qualified: t for t in CATALOG.values()}, {"public": tuple(sorted(CATALOG))})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pg2neo.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def resolved(path: Path) -> Mapping:
    spec, index = load_file(path)
    return resolve_module.resolve(spec, index, SNAPSHOT)


def problems_of(path: Path) -> list[str]:
    with pytest.raises(MappingError) as exc:
        resolved(path)
    message = str(exc.value)
    assert message.startswith("the mapping does not match the database:"), message
    return [line.strip() for line in message.splitlines()[1:]]


# -- two tables, one label: rows with equal keys would merge into one node ------------------------------------------


def test_two_tables_with_one_label_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: authors
            label: Person
          - table: publishers
            label: Person
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:5: label `Person` is also a label of `public.authors` ({path}:2)")
    assert "would become one node" in problem
    assert "`labels: [Publishers, Person]` here and `labels: [Authors, Person]` on `public.authors`" in problem


def test_a_first_label_that_is_another_tables_second_label_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: authors
            labels: [Author, Person]
          - table: publishers
            label: Person
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:5: label `Person` is also a label of `public.authors`")


def test_a_label_second_on_both_tables_is_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: authors
            labels: [Author, Person]
          - table: publishers
            labels: [Publisher, Person]
        """,
    )
    mapping = resolved(path)
    assert [n.labels for n in mapping.nodes] == [("Author", "Person"), ("Publisher", "Person")]


def test_default_labels_of_different_tables_do_not_clash(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes:\n  - table: authors\n  - table: publishers\n")
    assert [n.label for n in resolved(path).nodes] == ["Authors", "Publishers"]


# -- one relationship type drawn by two entries that delete each other's ---------------------------------------------


def test_two_join_tables_with_one_type_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - {table: authors, label: Author}
          - {table: publishers, label: Publisher}
        relationships:
          - table: wrote
            type: DEALS_WITH
            from: {table: authors, columns: author_id}
            to: {table: publishers, columns: publisher_id}
          - table: sold
            type: DEALS_WITH
            from: {table: authors, columns: author_id}
            to: {table: publishers, columns: publisher_id}
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(
        f"{path}:10: relationship type `DEALS_WITH` is also drawn by the join table `public.wrote` ({path}:5)"
    )
    assert "cleared by type and row key" in problem and "`type: DEALS_WITH_SOLD`" in problem


def test_a_join_table_and_a_foreign_key_with_one_type_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: tenants
            label: Tenant
          - table: programs
            label: Program
            relationships:
              - {type: OWNS, columns: tenant_id, to: tenants, direction: in}
          - {table: authors, label: Author}
          - {table: publishers, label: Publisher}
        relationships:
          - table: wrote
            type: OWNS
            from: {table: authors, columns: author_id}
            to: {table: publishers, columns: publisher_id}
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:12: relationship type `OWNS` is also drawn by the foreign key (tenant_id)")
    assert f"of `public.programs` ({path}:7)" in problem


def test_two_foreign_keys_of_one_table_with_one_type_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: threads
            label: Thread
            relationships:
              - {type: LINKS, columns: parent_id, to: threads}
              - {type: LINKS, columns: origin_id, to: threads}
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:6: relationship type `LINKS` is also drawn by the foreign key (parent_id)")
    assert "both draw it on the same nodes" in problem and "`type: LINKS_THREADS`" in problem


def test_an_outgoing_and_an_incoming_self_reference_of_one_type_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: threads
            label: Thread
            relationships:
              - {type: LINKS, columns: parent_id, to: threads}
              - {type: LINKS, columns: origin_id, to: threads, direction: in}
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:6: relationship type `LINKS` is also drawn by")


def test_one_type_from_one_node_to_two_tables_is_allowed(tmp_path: Path) -> None:
    # (:Tenant)-[:OWNS]->(:Program) and (:Tenant)-[:OWNS]->(:Project): each foreign key only removes the incoming
    # OWNS of its own table's nodes, so neither reaches the other's.
    path = write(
        tmp_path,
        """
        nodes:
          - {table: tenants, label: Tenant}
          - table: programs
            label: Program
            relationships: [{type: OWNS, columns: tenant_id, to: tenants, direction: in}]
          - table: projects
            label: Project
            relationships: [{type: OWNS, columns: tenant_id, to: tenants, direction: in}]
        """,
    )
    assert [r.type for n in resolved(path).nodes for r in n.fk_rels] == ["OWNS", "OWNS"]


def test_one_type_out_of_a_table_and_into_it_from_another_is_refused(tmp_path: Path) -> None:
    # programs' OWNS goes out of Program nodes; projects' OWNS (direction in, to programs) also leaves Program nodes:
    # the first's link statement would delete the second's relationships.
    path = write(
        tmp_path,
        """
        nodes:
          - {table: tenants, label: Tenant}
          - table: programs
            label: Program
            relationships: [{type: OWNS, columns: tenant_id, to: tenants}]
          - table: programmes
            label: Programme
            relationships: [{type: OWNS, columns: program_id, to: programs, direction: in}]
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:8: relationship type `OWNS` is also drawn by the foreign key (tenant_id)")


# -- node keys must stay exact -----------------------------------------------------------------------------------------


def test_a_numeric_key_is_refused_with_the_exact_text_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes:\n  - table: amounts\n    label: Amount\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:2: key column `id` (numeric) would become a Float")
    assert "0.1 and 0.10000000000000001" in problem and "add `types: {id: string}` under `properties:`" in problem


def test_a_numeric_key_mapped_as_its_text_is_exact(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: amounts
            label: Amount
            properties:
              types: {id: string}
        """,
    )
    [node] = resolved(path).nodes
    [key] = node.key_column_objs
    assert (key.kind, key.select_as, key.prop) == (ValueKind.TEXT, SelectAs.TEXT, "id")


def test_a_composite_key_with_a_numeric_part_is_refused_at_its_key_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: pairs
            label: Pair
            key: [a, b]
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:4: key column `b` (numeric(20,0)) would become a Float")


@pytest.mark.parametrize(
    ("table_name", "override", "expected"),
    [
        ("amounts", "float", "mapped as `float` is lossy"),
        ("metrics", "json", "mapped as `json`"),
        ("codes", "string", "is exact natively and its padding is part of the key; remove `id` from `types:`"),
        ("prices", "string", "is `money`"),
        ("prices", "native", "is `money`"),
        ("grids", "native", "is an array"),
    ],
)
def test_lossy_keys_are_refused_with_a_fix(tmp_path: Path, table_name: str, override: str, expected: str) -> None:
    path = write(
        tmp_path,
        f"""
        nodes:
          - table: {table_name}
            label: Keyed
            properties:
              types: {{id: {override}}}
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:5: key column `id`"), problem
    assert expected in problem


@pytest.mark.parametrize(("table_name", "override"), [("metrics", "native"), ("metrics", "float"), ("codes", "native")])
def test_exact_keys_are_accepted(tmp_path: Path, table_name: str, override: str) -> None:
    path = write(tmp_path, f"nodes:\n  - table: {table_name}\n    properties: {{types: {{id: {override}}}}}\n")
    assert resolved(path).nodes[0].key_columns == ("id",)


def test_float_is_exact_for_a_small_integer_but_not_a_numeric_key_part(tmp_path: Path) -> None:
    assert resolve_module.key_problem(col("small", "int4"), "float") is None
    assert resolve_module.key_problem(col("big", "int8"), "float") is not None
    assert resolve_module.key_problem(col("big", "int8"), "native") is None


# -- `properties:` entries that would be silently ignored -------------------------------------------------------------


def test_ignored_properties_entries_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - table: programs
            label: Program
            properties:
              include: [name, tenant_id]
              exclude: [tenant_id, id]
              rename: {id: program_id}
          - table: projects
            label: Project
            properties:
              exclude: [name]
              rename: {name: title}
              types: {name: json}
        """,
    )
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:6: `id` is a key column, and key columns are always properties") for p in problems
    ), problems
    assert any(p.startswith(f"{path}:6: column `tenant_id` is both in `include` and in `exclude`") for p in problems), (
        problems
    )
    assert any(
        p.startswith(f"{path}:7: `id` is a key column: its property name is set by `key_property`")
        and "`key_property: program_id`" in p
        for p in problems
    ), problems
    assert any(p.startswith(f"{path}:12: `rename` names column `name`, which is not copied") for p in problems), (
        problems
    )
    assert any(p.startswith(f"{path}:13: `types` names column `name`, which is not copied") for p in problems), problems
    assert len(problems) == 5, problems


def test_renaming_an_endpoint_column_of_a_join_table_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - {table: authors, label: Author}
          - {table: publishers, label: Publisher}
        relationships:
          - table: wrote
            type: WROTE_FOR
            from: {table: authors, columns: author_id}
            to: {table: publishers, columns: publisher_id}
            properties:
              rename: {author_id: by}
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:10: `rename` names column `author_id`, which is an endpoint column")


# -- verify counts rows that collide on one key ------------------------------------------------------------------------


def test_verify_counts_rows_that_map_to_one_key() -> None:
    size = 64
    one = ("1.2345678901234567e+19",)
    other = ("7",)
    items = iter([(0, one, 11), (0, other, 12), (0, one, 13), (0, one, 14)])
    wanted = [{bucket_of(one, size), bucket_of(other, size)}]
    found, repeated = _collect_slots(items, wanted, size)
    assert found[0] == {one: 11, other: 12}  # the first row's item is compared; the others are counted
    assert repeated[0] == [one, one]
    report = ScopeReport(":Amount", "node")
    count_collisions(report, repeated[0], samples=5)
    assert report.collisions == 2 and report.collision_samples == [list(one)]
    fk_report = ScopeReport("(:Amount)-[:X]->(:Y)", "fk")
    count_collisions(fk_report, repeated[0], samples=5)
    assert fk_report.collisions == 0  # counted once, on the node scope
