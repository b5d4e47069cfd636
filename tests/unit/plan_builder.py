"""Builds resolved mapping plans without servers: hand-written catalog tables and a mapping file's text go through
the real loader and the pure resolver (mapping/resolve.py). Shared by the unit tests of the pure core."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pg2neo.mapping.catalog import Catalog, CatalogColumn, CatalogTable, ForeignKey
from pg2neo.mapping.model import load_file
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import resolve

# base type -> the type name format_type() prints
TYPE_NAMES = {
    "int4": "integer",
    "int8": "bigint",
    "text": "text",
    "uuid": "uuid",
    "numeric": "numeric",
    "timestamptz": "timestamp with time zone",
    "date": "date",
    "bool": "boolean",
    "float8": "double precision",
    "jsonb": "jsonb",
}


def col(name: str, base: str = "int8", not_null: bool = True) -> CatalogColumn:
    return CatalogColumn(
        name=name,
        type_name=TYPE_NAMES.get(base, base),
        base_type=base,
        type_kind="b",
        element_type=None,
        element_kind=None,
        not_null=not_null,
        comparable=True,
    )


def fk(columns: tuple[str, ...], target: str, ref: tuple[str, ...] = ("id",)) -> ForeignKey:
    return ForeignKey(f"{'_'.join(columns)}_fkey", columns, f"public.{target}", ref)


def table(
    name: str,
    columns: list[CatalogColumn],
    key: tuple[str, ...] = ("id",),
    unique: tuple[tuple[str, ...], ...] = (),
    fks: tuple[ForeignKey, ...] = (),
) -> CatalogTable:
    return CatalogTable("public", name, {c.name: c for c in columns}, key, (key, *unique), fks)


def catalog(*tables: CatalogTable) -> Catalog:
    return Catalog({t.qualified: t for t in tables}, {"public": tuple(sorted(t.name for t in tables))})


def plan(tmp_path: Path, text: str, *tables: CatalogTable) -> Mapping:
    """The plan of the mapping file `text` over a catalog holding exactly `tables` (schema public)."""
    path = tmp_path / "pg2neo.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    spec, index = load_file(path)
    return resolve(spec, index, catalog(*tables))


# A small schema used by several tests: tenants <- projects (FK on the key), items with a uuid node key whose
# chunks reference its integer `id` (an FK to a unique column that is not the primary key), and a join table with
# its own key.
TENANTS = table("tenants", [col("id"), col("name", "text")])
PROJECTS = table(
    "projects",
    [col("id"), col("tenant_id", not_null=False), col("title", "text")],
    fks=(fk(("tenant_id",), "tenants"),),
)
ITEMS = table("items", [col("id"), col("node_id", "uuid"), col("body", "text")], key=("node_id",), unique=(("id",),))
CHUNKS = table(
    "chunks", [col("id"), col("item_id", not_null=False), col("n", "int4")], fks=(fk(("item_id",), "items"),)
)
TAGGED = table(
    "tagged",
    [col("id"), col("project_id"), col("tenant_id"), col("weight", "numeric")],
    fks=(fk(("project_id",), "projects"), fk(("tenant_id",), "tenants")),
)
SCHEMA = (TENANTS, PROJECTS, ITEMS, CHUNKS, TAGGED)

SCHEMA_YAML = """
nodes:
  - table: tenants
  - table: projects
    relationships:
      - {type: OWNED_BY, columns: tenant_id, to: tenants}
  - table: items
    key_property: id
    properties:
      rename: {id: pg_id}
  - table: chunks
    relationships:
      - {type: HAS_CHUNK, columns: item_id, to: items, direction: in}
relationships:
  - table: tagged
    type: TAGGED
    from: {table: projects, columns: project_id}
    to: {table: tenants, columns: tenant_id}
"""


def schema_plan(tmp_path: Path) -> Mapping:
    return plan(tmp_path, SCHEMA_YAML, *SCHEMA)
