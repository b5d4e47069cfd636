"""Property test: random writes from several concurrent PostgreSQL sessions, drained while they run, end in the
exact graph the oracle computes.

Place in the data flow: end to end, under concurrency. Writers (threads, one connection each) run random
operations — upserts, updates, deletes, delete+reinsert of the same key, FK re-points, join-table changes and key
changes — each in its own transaction (some fail on foreign keys or deadlocks and roll back, as in real life),
while an Engine drains the queue in another thread with small batches. When the writers are done and the queue
is empty, Neo4j must hold exactly the graph of the committed rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from neo4j import Driver

from oracle import NodeSpec, RelSpec, SchemaSpec, assert_graph_matches
from pg2neo.apply.engine import Engine
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.settings import ApplySettings
from pg2neo.transport.schema import mark_own_write

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE team (
    id        integer PRIMARY KEY,
    name      text NOT NULL,
    parent_id integer REFERENCES team (id) ON DELETE SET NULL
);
CREATE TABLE person (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    score   numeric,
    team_id integer REFERENCES team (id) ON DELETE SET NULL
);
CREATE TABLE member (
    person_id integer NOT NULL REFERENCES person (id) ON DELETE CASCADE,
    team_id   integer NOT NULL REFERENCES team (id) ON DELETE CASCADE,
    role      text,
    PRIMARY KEY (person_id, team_id)
);
"""

MAPPING = """
nodes:
  - table: team
    label: Team
    relationships:
      - {type: PART_OF, columns: parent_id, to: team}
  - table: person
    label: Person
    relationships:
      - {type: IN_TEAM, columns: team_id, to: team}
relationships:
  - table: member
    type: MEMBER
    from: {table: person, columns: person_id}
    to: {table: team, columns: team_id}
"""

SMALL = SchemaSpec(
    nodes=(
        NodeSpec("Team", ("id",), "SELECT id, name, parent_id FROM team"),
        NodeSpec("Person", ("id",), "SELECT id, name, score, team_id FROM person"),
    ),
    rels=(
        RelSpec("PART_OF", "Team", "Team", "SELECT id AS s0, parent_id AS e0 FROM team WHERE parent_id IS NOT NULL"),
        RelSpec("IN_TEAM", "Person", "Team", "SELECT id AS s0, team_id AS e0 FROM person WHERE team_id IS NOT NULL"),
        RelSpec("MEMBER", "Person", "Team", "SELECT person_id AS s0, team_id AS e0, role FROM member"),
    ),
)

# (statement, parameter count): every operation is one transaction of these statements
OPERATIONS: dict[str, list[str]] = {
    "upsert_team": [
        "INSERT INTO team (id, name, parent_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, parent_id = EXCLUDED.parent_id"
    ],
    "upsert_person": [
        "INSERT INTO person (id, name, score, team_id) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, score = EXCLUDED.score, team_id = EXCLUDED.team_id"
    ],
    "upsert_member": [
        "INSERT INTO member (person_id, team_id, role) VALUES (%s, %s, %s) "
        "ON CONFLICT (person_id, team_id) DO UPDATE SET role = EXCLUDED.role"
    ],
    "repoint_person": ["UPDATE person SET team_id = %s WHERE id = %s"],
    "repoint_team": ["UPDATE team SET parent_id = %s WHERE id = %s"],
    "rekey_member": ["UPDATE member SET team_id = %s WHERE person_id = %s AND team_id = %s"],
    "delete_team": ["DELETE FROM team WHERE id = %s"],
    "delete_person": ["DELETE FROM person WHERE id = %s"],
    "delete_member": ["DELETE FROM member WHERE person_id = %s AND team_id = %s"],
    "reinsert_person": [
        "DELETE FROM person WHERE id = %s",
        "INSERT INTO person (id, name, score, team_id) VALUES (%s, %s, %s, %s)",
    ],
}

ids = st.integers(1, 5)
maybe_id = st.none() | ids
names = st.sampled_from(["a", "b", "ß", "", "long name"])
scores = st.none() | st.decimals(-1000, 1000, places=2, allow_nan=False)
roles = st.none() | st.sampled_from(["lead", "member"])

operation = st.one_of(
    st.tuples(st.just("upsert_team"), st.tuples(ids, names, maybe_id)),
    st.tuples(st.just("upsert_person"), st.tuples(ids, names, scores, maybe_id)),
    st.tuples(st.just("upsert_member"), st.tuples(ids, ids, roles)),
    st.tuples(st.just("repoint_person"), st.tuples(maybe_id, ids)),
    st.tuples(st.just("repoint_team"), st.tuples(maybe_id, ids)),
    st.tuples(st.just("rekey_member"), st.tuples(ids, ids, ids)),
    st.tuples(st.just("delete_team"), st.tuples(ids)),
    st.tuples(st.just("delete_person"), st.tuples(ids)),
    st.tuples(st.just("delete_member"), st.tuples(ids, ids)),
    st.tuples(st.just("reinsert_person"), st.tuples(ids, names, scores, maybe_id)),
)
writer_ops = st.lists(operation, min_size=5, max_size=40)


def _params(name: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if name == "reinsert_person":
        return [(args[0],), args]
    return [args]


def run_writer(dsn: str, ops: list[tuple[str, tuple[Any, ...]]], outcome: list[int]) -> None:
    """Each operation in its own transaction; constraint violations and deadlocks roll back, as in production."""
    committed = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, args in ops:
            try:
                with conn.transaction():
                    for statement, params in zip(OPERATIONS[name], _params(name, args), strict=True):
                        conn.execute(statement, params)  # type: ignore[arg-type]
                committed += 1
            except (psycopg.errors.IntegrityError, psycopg.errors.DeadlockDetected):
                pass
    outcome.append(committed)


class Harness:
    def __init__(self, dsn: str, driver: Driver, mapping: Mapping) -> None:
        self.dsn = dsn
        self.driver = driver
        self.mapping = mapping
        self.conn = psycopg.connect(dsn, autocommit=True)

    def reset(self) -> None:
        """Empty tables (not captured: pg2neo's own origin), queue and graph, between examples."""
        with self.conn.transaction():
            mark_own_write(self.conn)
            self.conn.execute("DELETE FROM member")
            self.conn.execute("DELETE FROM person")
            self.conn.execute("DELETE FROM team")
            self.conn.execute("DELETE FROM pg2neo.changes")
        with self.driver.session() as session:
            session.run("MATCH (n) DETACH DELETE n").consume()


@pytest.fixture
def harness(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Harness]:
    path = tmp_path / "small.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)  # type: ignore[call-overload]
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        h = Harness(pg_dsn, driver, mapping)
        try:
            yield h
        finally:
            h.conn.close()


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(writers=st.lists(writer_ops, min_size=2, max_size=4), batch_rows=st.integers(1, 8))
def test_concurrent_writers_and_applier_converge(
    harness: Harness, writers: list[list[tuple[str, tuple[Any, ...]]]], batch_rows: int
) -> None:
    harness.reset()
    engine = Engine(harness.dsn, harness.driver, harness.mapping, ApplySettings(batch_rows=batch_rows))
    writers_done = threading.Event()
    errors: list[BaseException] = []
    applied: list[int] = []

    def drain() -> None:
        total = 0
        try:
            while True:
                finished = writers_done.is_set()  # read BEFORE the batch: then an empty batch means drained
                result = engine.apply_next()
                if result is not None:
                    total += result.events
                elif finished:
                    break
                else:
                    writers_done.wait(0.005)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            applied.append(total)
            engine.close()

    applier = threading.Thread(target=drain)
    applier.start()
    outcomes: list[int] = []
    threads = [threading.Thread(target=run_writer, args=(harness.dsn, ops, outcomes)) for ops in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    writers_done.set()
    applier.join(timeout=60)
    assert not applier.is_alive() and not errors, errors
    assert len(outcomes) == len(writers)
    row = harness.conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
    assert row == (0,)
    assert_graph_matches(harness.conn, harness.driver, SMALL)
