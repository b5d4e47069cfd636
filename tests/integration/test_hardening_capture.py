"""Writes that used to bypass the capture (issue 14, item 9): TRUNCATE of one partition of a mapped partitioned
table, partitions created after `init`, and sessions with `session_replication_role = replica`.

Place in the data flow: capture (triggers enabled ALWAYS, TRUNCATE triggers on partitions) -> queue -> apply,
against real PostgreSQL and Neo4j, compared with the oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver
from psycopg import sql

from oracle import NodeSpec, SchemaSpec, assert_graph_matches
from pg2neo.apply.engine import Engine
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service
from pg2neo.settings import ApplySettings
from pg_roles import temporary_roles

pytestmark = pytest.mark.integration

# Two levels: `south` is itself partitioned.
SCHEMA = """
CREATE TABLE reading (id integer, region text, value integer, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE reading_north PARTITION OF reading FOR VALUES IN ('north');
CREATE TABLE reading_south PARTITION OF reading FOR VALUES IN ('south') PARTITION BY RANGE (id);
CREATE TABLE reading_south_low PARTITION OF reading_south FOR VALUES FROM (0) TO (1000);
CREATE TABLE reading_south_high PARTITION OF reading_south FOR VALUES FROM (1000) TO (MAXVALUE);
CREATE TABLE plain (id integer PRIMARY KEY, name text);
"""

MAPPING = """
nodes:
  - table: reading
    label: Reading
  - table: plain
    label: Plain
"""

SPEC = SchemaSpec(
    nodes=(
        NodeSpec("Reading", ("id", "region"), "SELECT id, region, value FROM reading"),
        NodeSpec("Plain", ("id",), "SELECT id, name FROM plain"),
    ),
    rels=(),
)

FILL = """
INSERT INTO reading SELECT g, r, g FROM generate_series(1, 1500, 7) g, unnest(ARRAY['north', 'south']) r
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class Db:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping_path: Path

    def mapping(self) -> Mapping:
        return load_mapping(self.mapping_path, self.conn)

    def init(self) -> None:
        install.init(self.conn, self.driver, self.mapping())

    def drain(self) -> None:
        engine = Engine(self.dsn, self.driver, self.mapping(), ApplySettings())
        try:
            run_service(engine, Stopper(), 0.05, until_empty=True, schema_interval=None)
        finally:
            engine.close()

    def synced(self) -> None:
        assert self.conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone() == (0,)
        assert_graph_matches(self.conn, self.driver, SPEC)

    def queued(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.conn.execute("SELECT tbl, op::text FROM pg2neo.changes ORDER BY seq")]

    def nodes(self, label: str) -> int:
        with self.driver.session() as session:
            return int(session.run(f"MATCH (n:{label}) RETURN count(n) AS c").single(strict=True)["c"])

    def capture_triggers(self) -> dict[tuple[str, str], str]:
        """Every trigger calling a pg2neo function outside the pg2neo schema, clones included: its enabled state."""
        rows = self.conn.execute(
            "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid "
            "JOIN pg_namespace pn ON pn.oid = p.pronamespace WHERE pn.nspname = 'pg2neo' AND n.nspname <> 'pg2neo'"
        ).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}


@pytest.fixture
def db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        db = Db(pg_dsn, conn, driver, path)
        db.init()
        conn.execute(FILL)
        conn.execute("INSERT INTO plain SELECT g, 'n' || g FROM generate_series(1, 30) g")
        db.drain()
        db.synced()
        yield db


def test_truncating_a_partition_deletes_its_nodes(db: Db) -> None:
    before = db.nodes("Reading")
    north = db.conn.execute("SELECT count(*) FROM reading_north").fetchone()
    assert north is not None and north[0] > 100
    db.conn.execute("TRUNCATE reading_north")
    db.drain()
    db.synced()
    assert db.nodes("Reading") == before - north[0]
    # An intermediate partition: its rows are queued once, by it, not again by its own partitions.
    south_low = db.conn.execute("SELECT count(*) FROM reading_south_low").fetchone()
    db.conn.execute("TRUNCATE reading_south_low")
    db.drain()
    db.synced()
    db.conn.execute(FILL)
    db.drain()
    south = db.conn.execute("SELECT count(*) FROM reading_south").fetchone()
    db.conn.execute("TRUNCATE reading_south")
    assert south is not None and south_low is not None and len(db.queued()) == south[0]
    db.drain()
    db.synced()
    # Two partitions in one statement, then the whole table: one TRUNCATE event, nothing per row.
    db.conn.execute(FILL)
    db.drain()
    db.conn.execute("TRUNCATE reading_north, reading_south_high")
    db.drain()
    db.synced()
    db.conn.execute(FILL)
    db.drain()
    with db.conn.transaction():
        db.conn.execute("TRUNCATE reading")
        db.conn.execute("INSERT INTO reading VALUES (5, 'north', 5)")
    assert db.queued() == [("public.reading", "T"), ("public.reading", "I")]
    # Within one transaction a later partition TRUNCATE is captured again (the whole-table mark is gone).
    with db.conn.transaction():
        db.conn.execute("TRUNCATE reading_north")
    db.drain()
    db.synced()
    assert db.nodes("Reading") == 0


def test_partitions_added_after_init_and_reinit(db: Db) -> None:
    db.conn.execute("CREATE TABLE reading_east PARTITION OF reading FOR VALUES IN ('east')")
    db.conn.execute("CREATE TABLE reading_west (id integer, region text, value integer, PRIMARY KEY (id, region))")
    db.conn.execute("ALTER TABLE reading ATTACH PARTITION reading_west FOR VALUES IN ('west')")
    triggers = db.capture_triggers()
    # PostgreSQL 15 clones the row triggers (with their ALWAYS state) onto new partitions, not TRUNCATE triggers.
    for part in ("reading_east", "reading_west"):
        assert triggers[(part, "pg2neo_capture")] == "A" and triggers[(part, "pg2neo_capture_update")] == "A"
        assert (part, "pg2neo_capture_truncate") not in triggers
    db.conn.execute("INSERT INTO reading SELECT g, r, g FROM generate_series(1, 40) g, unnest(ARRAY['east', 'west']) r")
    db.drain()
    db.synced()
    db.init()  # again: adds what the new partitions miss (it used to fail on the cloned triggers)
    triggers = db.capture_triggers()
    assert triggers[("reading_east", "pg2neo_capture_truncate")] == "A"
    assert triggers[("reading_west", "pg2neo_capture_truncate_end")] == "A"
    db.conn.execute("TRUNCATE reading_east")
    db.drain()
    db.synced()
    # A detached partition keeps nothing of pg2neo once init ran again.
    db.conn.execute("ALTER TABLE reading DETACH PARTITION reading_west")
    db.init()
    assert not [key for key in db.capture_triggers() if key[0] == "reading_west"]
    # uninstall removes it all: triggers on every table and partition, functions, schema.
    removed = install.uninstall(db.conn)
    assert removed > 0 and db.capture_triggers() == {}
    assert db.conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pg2neo'").fetchone() == (0,)


def test_every_role_and_replica_sessions_are_captured(db: Db) -> None:
    triggers = db.capture_triggers()
    partitions = {"reading", "reading_north", "reading_south", "reading_south_low", "reading_south_high"}
    assert {table for table, _ in triggers} == partitions | {"plain"}
    assert set(triggers.values()) == {"A"}, triggers  # fire ALWAYS, replica sessions included
    # A replica-role session, as pg_restore and logical-replication apply workers run.
    with db.conn.transaction():
        db.conn.execute("SET LOCAL session_replication_role = replica")
        db.conn.execute("INSERT INTO plain VALUES (100, 'replica')")
        db.conn.execute("UPDATE plain SET name = 'replica update' WHERE id <= 3")
        db.conn.execute("DELETE FROM plain WHERE id BETWEEN 10 AND 12")
        db.conn.execute("INSERT INTO reading VALUES (2000, 'south', 1), (2001, 'north', 1)")
        db.conn.execute("TRUNCATE reading_south_low")
    db.drain()
    db.synced()
    # A role that only has DML on the tables, writing the parent and a partition directly.
    with temporary_roles(db.dsn, "writer") as roles:
        role, dsn = roles["writer"]
        grant = sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}")
        for table in ("plain", "reading", "reading_north"):
            db.conn.execute(grant.format(sql.Identifier(table), sql.Identifier(role)))
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute("INSERT INTO plain VALUES (200, 'writer')")
            writer.execute("UPDATE reading SET value = -value WHERE id < 100")
            writer.execute("INSERT INTO reading_north VALUES (3000, 'north', 3)")
            writer.execute("DELETE FROM reading_north WHERE id BETWEEN 200 AND 300")
        db.drain()
        db.synced()


# The UPDATE trigger's two forms (capture/triggers.py, `_update_trigger`): `whole` maps every column (UPDATE OF all of
# them, rows compared byte for byte), `picked` leaves `note` out (the watched columns compared one by one), and its
# BEFORE trigger changes a watched column whatever the UPDATE sets.
UPDATE_FORMS_SCHEMA = """
CREATE TABLE whole (id integer PRIMARY KEY, name text, version integer NOT NULL DEFAULT 1, doc json);
CREATE TABLE picked (id integer PRIMARY KEY, name text, version integer NOT NULL DEFAULT 1, note text);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$;
CREATE TRIGGER bump BEFORE UPDATE ON picked FOR EACH ROW EXECUTE FUNCTION bump();
INSERT INTO whole VALUES (1, 'a', 1, '{"x": 1}');
INSERT INTO picked VALUES (1, 'a', 1, 'n');
"""

UPDATE_FORMS_MAPPING = """
nodes:
  - table: whole
    label: Whole
  - table: picked
    label: Picked
    properties: {include: [name, version]}
"""


def test_update_trigger_queues_every_watched_change_and_only_those(
    pg_dsn: str, graph: Connections, tmp_path: Path
) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(UPDATE_FORMS_MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(UPDATE_FORMS_SCHEMA)
        install.init(conn, driver, load_mapping(path, conn))

        def queued(statement: str) -> list[tuple[str, str]]:
            conn.execute("DELETE FROM pg2neo.changes")
            conn.execute(statement)
            return [(r[0], r[1]) for r in conn.execute("SELECT tbl, op::text FROM pg2neo.changes ORDER BY seq")]

        forms = dict(
            conn.execute(
                "SELECT tgrelid::regclass::text, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = %s",
                ("pg2neo_capture_update",),
            ).fetchall()
        )
        assert "AFTER UPDATE OF id, name, version, doc ON" in forms["whole"]
        assert "AFTER UPDATE ON" in forms["picked"] and "note" not in forms["picked"]

        # Every column watched: a rewrite with the same values queues nothing, a change of any column queues it
        # (json has no equality operator: the bytes are compared).
        assert queued("UPDATE whole SET name = name, doc = doc") == []
        assert queued("""UPDATE whole SET doc = '{"x": 2}'""") == [("public.whole", "U")]
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("ALTER TABLE whole DROP COLUMN doc")
        conn.execute("ALTER TABLE whole RENAME COLUMN name TO title")  # the trigger follows the rename
        assert queued("UPDATE whole SET title = 'b'") == [("public.whole", "U")]
        conn.execute("ALTER TABLE whole RENAME COLUMN title TO name")

        # Some columns watched: the BEFORE trigger's change of `version` is queued although the UPDATE sets only
        # `note`; without it, a change of `note` alone queues nothing, and `note` may be dropped.
        assert queued("UPDATE picked SET note = 'changed'") == [("public.picked", "U")]
        conn.execute("ALTER TABLE picked DISABLE TRIGGER bump")
        assert queued("UPDATE picked SET note = 'again'") == []
        assert queued("UPDATE picked SET name = 'b'") == [("public.picked", "U")]
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("ALTER TABLE picked DROP COLUMN name")
        conn.execute("ALTER TABLE picked DROP COLUMN note")
