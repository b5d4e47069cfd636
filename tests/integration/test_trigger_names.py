"""The capture functions carry the specification's name (`pg2neo.sync_to_neo4j_<table>_<hash8>`), and `pg2neo init`
on a database installed by an earlier version (functions named `capture_<table>_<hash8>`) moves its triggers to the
new functions and drops the old ones.

Place in the data flow: capture (the generated functions and their triggers), against real PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE reading (id integer, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE reading_north PARTITION OF reading FOR VALUES IN ('north');
CREATE TABLE plain (id integer PRIMARY KEY, name text);
"""

MAPPING = """
nodes:
  - table: reading
    label: Reading
  - table: plain
    label: Plain
"""

# The generated per-table functions and the triggers that call them.
FUNCTIONS = """
SELECT p.proname, count(t.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
LEFT JOIN pg_trigger t ON t.tgfoid = p.oid
WHERE n.nspname = 'pg2neo' AND p.proname ~ '_[0-9a-f]{8}$' GROUP BY 1 ORDER BY 1
"""


def _functions(conn: psycopg.Connection[object]) -> dict[str, int]:
    return {str(name): int(n) for name, n in conn.execute(FUNCTIONS).fetchall()}


def test_init_replaces_the_functions_of_an_earlier_install(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        current = _functions(conn)
        prefixes = ["sync_to_neo4j_part_reading_", "sync_to_neo4j_plain_", "sync_to_neo4j_reading_"]
        assert [name[: len(prefix)] for name, prefix in zip(current, prefixes, strict=True)] == prefixes
        assert all(calls > 0 for calls in current.values())

        # An install by an earlier version: the same functions under their old names, called by the triggers.
        for name in current:
            old = name.replace("sync_to_neo4j_", "capture_", 1)
            conn.execute(f'ALTER FUNCTION pg2neo."{name}"() RENAME TO "{old}"')
        assert all(n.startswith("capture_") for n in _functions(conn))

        install.init(conn, driver, mapping)
        assert _functions(conn) == current  # the old functions are gone; the triggers call the new ones
        conn.execute("INSERT INTO plain VALUES (1, 'a')")
        conn.execute("TRUNCATE reading_north")
        queued = conn.execute("SELECT tbl, op::text FROM pg2neo.changes ORDER BY seq").fetchall()
        assert queued == [("public.plain", "I")]  # the partition was empty: it queues no delete

        assert install.uninstall(conn) > 0
        assert conn.execute("SELECT to_regnamespace('pg2neo')").fetchone() == (None,)
