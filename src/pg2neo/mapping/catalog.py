"""What the live PostgreSQL catalog says about the tables a mapping names: columns, types, keys, foreign keys.

`read_catalog` reads it once into a `Catalog` snapshot; the resolver (resolve.py) checks a mapping against that
snapshot without a connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg


@dataclass(frozen=True)
class CatalogColumn:
    name: str
    type_name: str  # format_type(), usable in a cast: `numeric(12,2)`, `text[]`, `public.content_kind`
    base_type: str  # the type's own name (`int4`, `_text`, `content_kind`); for domains, the base type's
    type_kind: str  # pg_type.typtype of the base: b(ase), e(num), r(ange), c(omposite), m(ultirange)
    element_type: str | None  # for arrays: the element type's name
    element_kind: str | None
    not_null: bool
    comparable: bool  # has a default btree operator class, so `IS DISTINCT FROM` works on it


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_table: str  # schema-qualified
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class CatalogTable:
    schema: str
    name: str
    columns: dict[str, CatalogColumn]
    primary_key: tuple[str, ...]
    unique_keys: tuple[tuple[str, ...], ...]  # primary key and unique constraints/indexes (non-partial)
    foreign_keys: tuple[ForeignKey, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Catalog:
    """A snapshot of the catalog for one mapping: the tables it names that exist (by schema-qualified name) and, for
    each schema in which a name it uses is missing, that schema's table names (to suggest the closest one)."""

    tables: dict[str, CatalogTable]
    table_names: dict[str, tuple[str, ...]] = field(default_factory=dict)


_COLUMNS = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       bt.typname,
       bt.typtype,
       et.typname,
       et.typtype,
       a.attnotnull,
       EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
               WHERE am.amname = 'btree' AND oc.opcdefault
                 AND oc.opcintype IN (coalesce(et.oid, bt.oid), CASE WHEN et.oid IS NOT NULL THEN 2277 END))
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_UNIQUE = """
SELECT i.indisprimary, array_agg(a.attname ORDER BY k.ord)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indisprimary
"""

_FOREIGN = """
SELECT c.conname,
       (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(n, ord)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n),
       rn.nspname || '.' || r.relname,
       (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(n, ord)
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n)
FROM pg_constraint c
JOIN pg_class r ON r.oid = c.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.conrelid = %s::regclass AND c.contype = 'f'
"""


def table_names(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
        (schema,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def read_table(conn: psycopg.Connection[Any], schema: str, name: str) -> CatalogTable | None:
    found = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    if found is None:
        return None
    oid = int(found[0])
    columns = {
        row[0]: CatalogColumn(
            name=row[0],
            type_name=row[1],
            base_type=row[2],
            type_kind=row[3],
            element_type=row[4],
            element_kind=row[5],
            not_null=bool(row[6]),
            comparable=bool(row[7]),
        )
        for row in conn.execute(_COLUMNS, (oid,)).fetchall()
    }
    primary: tuple[str, ...] = ()
    unique: list[tuple[str, ...]] = []
    for is_primary, cols in conn.execute(_UNIQUE, (oid,)).fetchall():
        key = tuple(cols)
        unique.append(key)
        if is_primary:
            primary = key
    foreign = tuple(
        ForeignKey(name=row[0], columns=tuple(row[1]), ref_table=row[2], ref_columns=tuple(row[3]))
        for row in conn.execute(_FOREIGN, (oid,)).fetchall()
    )
    return CatalogTable(schema, name, columns, primary, tuple(unique), foreign)


def read_catalog(conn: psycopg.Connection[Any], names: Iterable[tuple[str, str]]) -> Catalog:
    """The snapshot of the tables `names` (schema, table) for the resolver."""
    tables: dict[str, CatalogTable] = {}
    listed: dict[str, tuple[str, ...]] = {}
    for schema, name in names:
        if f"{schema}.{name}" in tables:
            continue
        found = read_table(conn, schema, name)
        if found is not None:
            tables[found.qualified] = found
        elif schema not in listed:
            listed[schema] = tuple(table_names(conn, schema))
    return Catalog(tables, listed)
