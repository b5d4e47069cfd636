"""Invariants of the apply path that no other behavioural test guarded (issue 15, "tests that would catch a broken
apply path"), against real PostgreSQL and Neo4j.

Each test here was checked to fail against one deliberate bug in the product (and to pass without it):

- the version guard (both layers: the epoch high-water node that makes `GraphWriter.write` raise `EpochBehind`,
  and the per-node/relationship `_pg2neo_version <= $epoch` guard under it), bug: `_guard` always true;
- the identity of a join-table relationship is its row key (`_pg2neo_key`), not its endpoints, bug: join
  relationships merged by their endpoints;
- recovery honours a veto already in Neo4j, bug: recovery commits a prepared transaction whatever the marker says;
- the UPDATE trigger watches foreign-key columns that are not mapped as properties, bug: FK columns left out of
  the trigger's `WHEN` clause.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver

from pg2neo.apply.batch import BatchBuilder, GraphBatch
from pg2neo.apply.cypher import EPOCH_LABEL, MARKER_LABEL, MARKER_VETO
from pg2neo.apply.engine import Engine
from pg2neo.apply.reader import page_query
from pg2neo.apply.writer import GraphWriter
from pg2neo.capture.session import prepare_connection
from pg2neo.coordinate import recover
from pg2neo.errors import EpochBehind
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service
from pg2neo.settings import ApplySettings

pytestmark = pytest.mark.integration

# A person belongs to a team by a foreign key; `member` is a join table with a key of its own (`id`), so two of its
# rows may join the same pair of nodes. `team_id` is left out of the person's properties: only the relationship
# carries it.
SCHEMA = """
CREATE TABLE team (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE person (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    team_id integer REFERENCES team (id)
);
CREATE TABLE member (
    id        integer PRIMARY KEY,
    person_id integer NOT NULL REFERENCES person (id),
    team_id   integer NOT NULL REFERENCES team (id),
    role      text
);
"""
MAPPING = """
nodes:
  - table: team
    label: Team
  - table: person
    label: Person
    properties:
      exclude: [team_id]
    relationships:
      - {type: IN_TEAM, columns: team_id, to: team}
relationships:
  - table: member
    type: MEMBER
    from: {table: person, columns: person_id}
    to: {table: team, columns: team_id}
"""
DATA = """
INSERT INTO team VALUES (1, 'red'), (2, 'blue');
INSERT INTO person VALUES (1, 'ada', 1), (2, 'bob', 1);
INSERT INTO member VALUES (1, 1, 1, 'lead'), (2, 1, 1, 'coach');
"""
HUGE_VERSION = 9_223_372_036_854_775_000  # a version no epoch reaches


@dataclass
class Db:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping: Mapping
    mapping_path: Path
    servers: Connections

    def drain(self) -> None:
        """Apply every queued change with the real engine."""
        engine = Engine(self.dsn, self.driver, self.mapping, ApplySettings())
        try:
            run_service(engine, Stopper(), 0.05, until_empty=True)
        finally:
            engine.close()

    def queued(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
        assert row is not None
        return int(row[0])

    def people(self) -> dict[int, tuple[str, int]]:
        """id -> (name, _pg2neo_version) of every Person node."""
        records = self.driver.execute_query(
            "MATCH (n:Person) RETURN n.id AS id, n.name AS name, n._pg2neo_version AS v"
        ).records
        return {int(r["id"]): (str(r["name"]), int(r["v"])) for r in records}

    def members(self) -> dict[str, tuple[int, int, str | None, int]]:
        """_pg2neo_key -> (person id, team id, role, _pg2neo_version) of every MEMBER relationship."""
        records = self.driver.execute_query(
            "MATCH (p:Person)-[r:MEMBER]->(t:Team) "
            "RETURN r._pg2neo_key AS k, p.id AS p, t.id AS t, r.role AS role, r._pg2neo_version AS v"
        ).records
        out: dict[str, tuple[int, int, str | None, int]] = {}
        for r in records:
            assert r["k"] not in out, f"two MEMBER relationships carry the key {r['k']}"
            out[str(r["k"])] = (int(r["p"]), int(r["t"]), r["role"], int(r["v"]))
        return out

    def team_of(self, person_id: int) -> list[int]:
        records = self.driver.execute_query(
            "MATCH (:Person {id: $id})-[:IN_TEAM]->(t:Team) RETURN t.id AS t ORDER BY t", id=person_id
        ).records
        return [int(r["t"]) for r in records]


@pytest.fixture
def db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        conn.execute(DATA)
        yield Db(pg_dsn, conn, driver, mapping, path, graph)


# -- the version guard -------------------------------------------------------------------------------------------


def read_batch(db: Db, builder: BatchBuilder, tables: tuple[str, ...]) -> GraphBatch:
    """The rows of `tables` as they are now, read the way the applier reads them, as one batch."""
    batch = builder.new_batch()
    with psycopg.connect(db.dsn, autocommit=True) as reader:
        prepare_connection(reader)
        for table in tables:
            entry = db.mapping.entry(table)
            assert entry is not None, table
            rows = [tuple(r) for r in reader.execute(page_query(db.mapping, entry, False), [10_000])]
            builder.add_rows(batch, entry, rows)
    assert not batch.failures, batch.failures
    return batch


def deletes_batch(db: Db, builder: BatchBuilder, table: str, *keys: str) -> GraphBatch:
    """A batch deleting rows of `table` by their keys (as queued: one text per key column)."""
    batch = builder.new_batch()
    entry = db.mapping.entry(table)
    assert entry is not None, table
    builder.add_deletes(batch, entry, [(key,) for key in keys])
    return batch


def set_high(db: Db, high: int) -> None:
    """Set the graph's epoch high-water mark by hand (a graph restored from an older backup: its epoch node is
    behind the versions that some nodes still carry)."""
    db.driver.execute_query(f"MATCH (h:{EPOCH_LABEL} {{name: 'epoch'}}) SET h.high = $high", high=high)


@pytest.fixture
def at_epoch_10(db: Db) -> tuple[GraphWriter, BatchBuilder]:
    """The current rows written at epoch 10; then the rows changed in PostgreSQL to what an older read (epoch 5)
    would have seen. Returns the writer and a builder for those older batches."""
    writer = GraphWriter(db.driver, db.mapping)
    writer.ensure_schema()
    builder = BatchBuilder(db.mapping)
    assert writer.write(read_batch(db, builder, ("public.team", "public.person", "public.member")), 10) == {}
    assert db.people() == {1: ("ada", 10), 2: ("bob", 10)}
    assert db.members() == {'["1"]': (1, 1, "lead", 10), '["2"]': (1, 1, "coach", 10)}
    db.conn.execute("UPDATE person SET name = 'stale ' || name; UPDATE member SET role = 'stale'")
    return writer, builder


def test_an_older_epoch_is_refused_whole_by_the_epoch_high_water(
    db: Db, at_epoch_10: tuple[GraphWriter, BatchBuilder]
) -> None:
    """Layer one: the graph has seen epoch 10, so a write at epoch 5 raises `EpochBehind` and writes nothing."""
    writer, builder = at_epoch_10
    older = [
        read_batch(db, builder, ("public.person",)),  # node upserts
        read_batch(db, builder, ("public.member",)),  # join relationship upserts
        deletes_batch(db, builder, "public.person", "2"),  # a node delete
        deletes_batch(db, builder, "public.member", "1"),  # a join relationship delete
    ]
    for batch in older:
        with pytest.raises(EpochBehind) as behind:
            writer.write(batch, 5)
        assert (behind.value.epoch, behind.value.high) == (5, 10)
    assert db.people() == {1: ("ada", 10), 2: ("bob", 10)}
    assert db.members() == {'["1"]': (1, 1, "lead", 10), '["2"]': (1, 1, "coach", 10)}


def test_a_newer_version_is_not_overwritten_or_deleted_by_an_older_write(
    db: Db, at_epoch_10: tuple[GraphWriter, BatchBuilder]
) -> None:
    """Layer two: the epoch node lowered by hand lets an epoch-5 write through; the per-node and per-relationship
    guards still keep what version 10 wrote, and the writer counts the rows they refused."""
    writer, builder = at_epoch_10
    set_high(db, 1)
    assert writer.write(read_batch(db, builder, ("public.person",)), 5) == {"Person": 2}
    assert writer.write(read_batch(db, builder, ("public.member",)), 5) == {"MEMBER": 2}
    assert writer.write(deletes_batch(db, builder, "public.person", "2"), 5) == {"Person": 1}
    assert db.people() == {1: ("ada", 10), 2: ("bob", 10)}
    assert db.members() == {'["1"]': (1, 1, "lead", 10), '["2"]': (1, 1, "coach", 10)}


def test_a_newer_join_relationship_is_not_deleted_by_an_older_write(
    db: Db, at_epoch_10: tuple[GraphWriter, BatchBuilder]
) -> None:
    writer, builder = at_epoch_10
    set_high(db, 1)
    refused = writer.write(deletes_batch(db, builder, "public.member", "1"), 5)
    assert db.members() == {'["1"]': (1, 1, "lead", 10), '["2"]': (1, 1, "coach", 10)}
    assert refused == {"MEMBER": 1}


def test_a_newer_nodes_fk_relationship_is_not_moved_by_an_older_write(
    db: Db, at_epoch_10: tuple[GraphWriter, BatchBuilder]
) -> None:
    writer, builder = at_epoch_10
    set_high(db, 1)
    db.conn.execute("UPDATE person SET team_id = 2 WHERE id = 1")
    assert writer.write(read_batch(db, builder, ("public.person",)), 5) == {"Person": 2}
    assert db.people() == {1: ("ada", 10), 2: ("bob", 10)}
    assert db.team_of(1) == [1]


def stamp(db: Db, cypher: str) -> None:
    """Stamp graph elements by hand with a version no epoch will reach (cypher binds it as $v)."""
    summary = db.driver.execute_query(cypher, v=HUGE_VERSION).summary
    assert summary.counters.properties_set == 1, cypher


def test_a_huge_version_survives_the_engine_applying_an_update_and_a_delete(db: Db) -> None:
    """End to end: a synced node and join relationship carrying a newer version than any epoch keep their state
    through an UPDATE and a DELETE of their rows applied by the engine (the node UPDATE alone is in
    test_hardening_apply.py)."""
    db.drain()
    stamp(db, "MATCH (n:Person {id: 2}) SET n._pg2neo_version = $v")
    stamp(db, "MATCH ()-[r:MEMBER {_pg2neo_key: '[\"2\"]'}]->() SET r._pg2neo_version = $v")
    db.conn.execute("UPDATE member SET role = 'changed' WHERE id = 2")
    db.conn.execute("UPDATE member SET role = 'changed too' WHERE id = 1")  # an unstamped one still applies
    db.conn.execute("DELETE FROM person WHERE id = 2")
    db.drain()
    assert db.queued() == 0
    people = db.people()
    assert people[2] == ("bob", HUGE_VERSION), "the node with the newer version was deleted"
    members = db.members()
    assert members['["2"]'] == (1, 1, "coach", HUGE_VERSION), "the relationship with the newer version changed"
    assert members['["1"]'][2] == "changed too"


# -- join-table relationships are identified by their row key ------------------------------------------------------


def test_join_rows_joining_the_same_pair_are_separate_relationships(db: Db) -> None:
    db.drain()
    assert {k: v[:3] for k, v in db.members().items()} == {'["1"]': (1, 1, "lead"), '["2"]': (1, 1, "coach")}
    db.conn.execute("UPDATE member SET role = 'assistant' WHERE id = 2")
    db.drain()
    assert {k: v[2] for k, v in db.members().items()} == {'["1"]': "lead", '["2"]': "assistant"}
    db.conn.execute("DELETE FROM member WHERE id = 1")
    db.drain()
    assert {k: v[:3] for k, v in db.members().items()} == {'["2"]': (1, 1, "assistant")}
    db.conn.execute("INSERT INTO member VALUES (3, 1, 1, 'again')")
    db.drain()
    assert {k: v[2] for k, v in db.members().items()} == {'["2"]': "assistant", '["3"]': "again"}
    assert verify(db.dsn, db.driver, db.mapping).drift_total == 0


# -- foreign-key columns are watched even when they are not properties ---------------------------------------------


def test_update_of_only_an_unmapped_fk_column_moves_the_relationship(db: Db) -> None:
    db.drain()
    assert db.team_of(1) == [1]
    properties = db.driver.execute_query("MATCH (n:Person {id: 1}) RETURN keys(n) AS k").records[0]["k"]
    assert "team_id" not in properties, "the mapping leaves team_id out of the properties"
    db.conn.execute("UPDATE person SET team_id = 2 WHERE id = 1")
    assert db.queued() == 1, "the UPDATE of the foreign-key column alone queued no change"
    db.drain()
    assert db.team_of(1) == [2]
    db.conn.execute("UPDATE person SET team_id = NULL WHERE id = 1")
    db.drain()
    assert db.team_of(1) == []
    assert verify(db.dsn, db.driver, db.mapping).drift_total == 0


# -- recovery honours a veto already in Neo4j ------------------------------------------------------------------------


def prepared(db: Db) -> list[str]:
    rows = db.conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()").fetchall()
    return [str(r[0]) for r in rows]


def crash_strict_committer_after_prepare(db: Db, name: str) -> None:
    """Run tests/integration/strict_child.py: a strict transaction `UPDATE person SET name` of person 1 that
    SIGKILLs its own process right after PREPARE TRANSACTION, before its Neo4j commit."""
    args = {
        "pg_dsn": db.dsn,
        "neo4j_uri": db.servers.neo4j_uri,
        "neo4j_user": db.servers.neo4j_user,
        "neo4j_password": db.servers.neo4j_password,
        "mapping": str(db.mapping_path),
        "stop": "after_prepare",
        "person_id": 1,
        "name": name,
    }
    child = Path(__file__).with_name("strict_child.py")
    done = subprocess.run([sys.executable, str(child), json.dumps(args)], timeout=120, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode(errors="replace")[-3000:]
    # the killed committer's session ends by itself: wait for it, so that nothing but the prepared transaction is left
    deadline = time.monotonic() + 30
    while True:
        row = db.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        ).fetchone()
        if row is not None and row[0] == 0:
            return
        assert time.monotonic() < deadline, "the killed committer's session did not end"
        time.sleep(0.05)


def test_recovery_rolls_back_a_prepared_transaction_whose_veto_is_in_neo4j(db: Db) -> None:
    db.drain()
    before_graph = db.people()
    crash_strict_committer_after_prepare(db, "crashed")
    gids = prepared(db)
    assert len(gids) == 1
    # An earlier recovery pass wrote the veto and stopped before its ROLLBACK PREPARED.
    veto = db.driver.execute_query(MARKER_VETO, gid=gids[0]).records
    assert veto[0]["vetoed"] is True
    # A long timeout: recovery would leave a transaction without marker alone; the veto alone must decide.
    report = recover(db.conn, db.driver, prepared_timeout=3600)
    assert report.rolled_back == gids and report.committed == [] and report.in_doubt == []
    assert prepared(db) == []
    markers = db.driver.execute_query(f"MATCH (m:{MARKER_LABEL}) RETURN count(m) AS c").records
    assert markers[0]["c"] == 0, "the settled transaction's veto is removed"
    row = db.conn.execute("SELECT name FROM person WHERE id = 1").fetchone()
    assert row is not None and row[0] == "ada", "PostgreSQL committed a vetoed transaction"
    assert db.people() == before_graph
    assert db.queued() == 0, "the rolled-back transaction queued nothing"
