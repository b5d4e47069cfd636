"""The catalog facts `pg2neo mapping suggest` proposes a mapping from: every table of the chosen schemas.

Place in the data flow: before `mapping` (it reads what a mapping file would be written for). The tables themselves
are read by `pg2neo.mapping.catalog.read_table`, the reader the validator uses, so the suggestion sees the keys and
foreign keys exactly as `pg2neo init` will; this module adds what only a suggestion needs: which tables are
partitions (their rows belong to the partitioned table) and which belong to an extension (e.g. PostGIS's
`spatial_ref_sys`), which are not the user's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from pg2neo.errors import MappingError
from pg2neo.mapping.catalog import CatalogTable, read_table


@dataclass(frozen=True)
class TableFacts:
    table: CatalogTable
    partition_of: str | None = None  # the schema-qualified partitioned table this one is a partition of
    extension: str | None = None  # the extension that created the table


_TABLES = """
SELECT n.nspname,
       c.relname,
       (SELECT pn.nspname || '.' || p.relname
        FROM pg_inherits i
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE i.inhrelid = c.oid AND c.relispartition
        LIMIT 1),
       (SELECT e.extname
        FROM pg_depend d
        JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
        LIMIT 1)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p')
ORDER BY array_position(%s, n.nspname::text), c.relname
"""


def read_schemas(conn: psycopg.Connection[Any], schemas: list[str]) -> list[TableFacts]:
    """Every ordinary and partitioned table of `schemas` (in the order given, then by name)."""
    known = {str(row[0]) for row in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    missing = [s for s in schemas if s not in known]
    if missing:
        visible = sorted(s for s in known if not s.startswith(("pg_", "information_schema")))
        raise MappingError(
            f"schema {', '.join(f'`{s}`' for s in missing)} does not exist in this database; "
            f"pass an existing one with --schema (known: {', '.join(visible)})"
        )
    facts = []
    for schema, name, parent, extension in conn.execute(_TABLES, (schemas, schemas)).fetchall():
        table = read_table(conn, schema, name)
        if table is None:  # dropped between the two reads
            continue
        facts.append(TableFacts(table, partition_of=parent, extension=extension))
    return facts
