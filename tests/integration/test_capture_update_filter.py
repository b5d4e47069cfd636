"""The UPDATE trigger's filter (issue 17, item 4): which updates queue a change, in both forms of its WHEN clause.

Place in the data flow: capture (AFTER UPDATE trigger, WHEN clause) -> queue -> apply, against real PostgreSQL and
Neo4j. A table whose every column is watched gets the cheap whole-row binary comparison (`OLD *<> NEW`); a table
with a column the mapping leaves out keeps the per-column comparison, so updating only that column queues nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver

from oracle import NodeSpec, SchemaSpec, assert_graph_matches
from pg2neo.apply.engine import Engine
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service
from pg2neo.settings import ApplySettings

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE doc (id integer PRIMARY KEY, title text NOT NULL, spec json, spot point, amount numeric);
CREATE TABLE account (id integer PRIMARY KEY, name text NOT NULL, secret text);
"""

FILL = """
INSERT INTO doc SELECT g, 'd' || g, '{"v": 1}', '(1,1)', 1.5 FROM generate_series(1, 5) g;
INSERT INTO account SELECT g, 'a' || g, 's' FROM generate_series(1, 5) g;
"""

MAPPING = """
nodes:
  - table: doc
    label: Doc
  - table: account
    label: Account
    properties: {exclude: [secret]}
"""

SPEC = SchemaSpec(
    nodes=(
        NodeSpec("Doc", ("id",), "SELECT id, title, spec::text AS spec, spot::text AS spot, amount FROM doc"),
        NodeSpec("Account", ("id",), "SELECT id, name FROM account"),
    ),
    rels=(),
)


@dataclass(frozen=True)
class Db:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping_path: Path

    def queued(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
        assert row is not None
        return int(row[0])

    def when(self, table: str) -> str:
        row = self.conn.execute(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND tgname = 'pg2neo_capture_update'",
            (table,),
        ).fetchone()
        assert row is not None
        return str(row[0]).split(" WHEN (", 1)[1]

    def drain(self) -> None:
        engine = Engine(self.dsn, self.driver, load_mapping(self.mapping_path, self.conn), ApplySettings())
        try:
            run_service(engine, Stopper(), 0.05, until_empty=True, schema_interval=None)
        finally:
            engine.close()


@pytest.fixture
def db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        install.init(conn, driver, load_mapping(path, conn))
        conn.execute(FILL)
        db = Db(pg_dsn, conn, driver, path)
        db.drain()
        assert db.queued() == 0
        yield db


def test_whole_row_comparison_only_where_every_column_is_watched(db: Db) -> None:
    assert db.when("doc").startswith("(old.* *<> new.*))")
    assert "*<>" not in db.when("account") and "IS DISTINCT FROM" in db.when("account")


def test_updates_queue_a_change_if_and_only_if_a_watched_value_changed(db: Db) -> None:
    c = db.conn
    c.execute("UPDATE doc SET title = title, spec = spec, spot = spot, amount = amount")  # no value changes
    c.execute("UPDATE account SET secret = 'changed'")  # left out of the mapping
    c.execute("UPDATE account SET name = name")
    assert db.queued() == 0
    # json and point have no btree equality: the binary comparison still sees their changes
    c.execute("UPDATE doc SET spec = '{\"v\": 2}' WHERE id = 1")
    c.execute("UPDATE doc SET spot = '(2,2)' WHERE id = 2")
    c.execute("UPDATE account SET name = 'renamed' WHERE id = 1")
    assert db.queued() == 3
    # a change of form (numeric scale) queues too: the applier re-reads the row, harmlessly
    c.execute("UPDATE doc SET amount = 1.50 WHERE id = 3")
    assert db.queued() == 4
    with pytest.raises(RuntimeError), c.transaction():
        c.execute("UPDATE doc SET title = 'ghost' WHERE id = 4")
        raise RuntimeError("roll back")
    assert db.queued() == 4  # queued if and only if the transaction commits
    db.drain()
    assert db.queued() == 0
    assert_graph_matches(c, db.driver, SPEC)


def test_renamed_and_added_columns_never_fail_the_applications_update(db: Db) -> None:
    c = db.conn
    c.execute("ALTER TABLE doc RENAME COLUMN title TO headline")
    c.execute("UPDATE doc SET headline = headline || '!' WHERE id = 1")
    assert db.queued() == 1
    c.execute("ALTER TABLE doc RENAME COLUMN headline TO title")
    c.execute("ALTER TABLE doc ADD COLUMN extra json")
    c.execute("UPDATE doc SET extra = '{}' WHERE id = 2")  # not mapped yet: queued, never refused
    assert db.queued() == 2
    c.execute("ALTER TABLE doc DROP COLUMN extra")
    db.drain()
    assert_graph_matches(c, db.driver, SPEC)
