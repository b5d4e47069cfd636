"""Two sink workers' transactions racing on one relationship, interleaved on purpose (real Neo4j, no Kafka).

Place in the data flow: apply (`GraphWriter(awaiting=True)`, the Kafka sink's writes). Events of different tables
arrive in different partitions, so two workers may write, at the same moment, the delete of a person (worker A,
which turns relationships into that person into waiting ones: the row may come back under a new key) and the delete
of a membership into that person (worker B). Whichever transaction takes the locks first, no waiting relationship
may be left for a row PostgreSQL no longer has: nothing would ever settle it. The restart fault test found one such
leftover; these tests hold one transaction open at the racy moment and run the other against it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from neo4j import Driver, Transaction

from pg2neo.apply.batch import BatchBuilder, GraphBatch
from pg2neo.apply.cypher import PENDING_COUNT
from pg2neo.apply.writer import GraphWriter
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime.connections import Connections

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE teams (id int PRIMARY KEY, name text);
CREATE TABLE people (id int PRIMARY KEY, name text, team_id int REFERENCES teams (id));
CREATE TABLE memberships (
    person_id int NOT NULL REFERENCES people (id),
    team_id int NOT NULL REFERENCES teams (id),
    role text,
    PRIMARY KEY (person_id, team_id)
);
"""
MAPPING = """
version: 1
nodes:
  - {table: teams, label: Team}
  - table: people
    label: Person
    relationships:
      - {type: MEMBER_OF, columns: team_id, to: teams}
relationships:
  - table: memberships
    type: BELONGS_TO
    from: {table: people, columns: person_id}
    to: {table: teams, columns: team_id}
"""
SETUP, DELETES = 10, 20  # versions: the rows' inserts, then the deletes (one source transaction in PostgreSQL)


@pytest.fixture
def mapping(pg_dsn: str, tmp_path: Path) -> Mapping:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        return load_mapping(path, conn)


@pytest.fixture
def driver(graph: Connections) -> Iterator[Driver]:
    with graph.driver() as driver:
        yield driver


def _batch(mapping: Mapping, build: Callable[[BatchBuilder, GraphBatch], None]) -> GraphBatch:
    builder = BatchBuilder(mapping, by_reference=True)
    batch = builder.new_batch()
    build(builder, batch)
    assert not batch.failures, batch.failures
    return batch


def _setup(mapping: Mapping, writer: GraphWriter) -> None:
    """Team 1, person 7 in it (a foreign key) and the membership (7, 1) between them, as a sink writes them."""

    def rows(builder: BatchBuilder, batch: GraphBatch) -> None:
        builder.add_rows(batch, mapping.node("public.teams"), [(("1",), 1, "t")], [SETUP])
        builder.add_rows(batch, mapping.node("public.people"), [(("7",), 7, "p", 1, 1)], [SETUP])
        (join,) = mapping.joins
        builder.add_rows(batch, join, [(("7", "1"), "member", 7, 1, 7, 1)], [SETUP])

    writer.write(_batch(mapping, rows), 0)


def _person_delete(mapping: Mapping) -> GraphBatch:
    return _batch(mapping, lambda b, batch: b.add_deletes(batch, mapping.node("public.people"), [("7",)], [DELETES]))


def _membership_delete(mapping: Mapping) -> GraphBatch:
    (join,) = mapping.joins
    return _batch(mapping, lambda b, batch: b.add_deletes(batch, join, [("7", "1")], [DELETES]))


def _team_delete(mapping: Mapping) -> GraphBatch:
    return _batch(mapping, lambda b, batch: b.add_deletes(batch, mapping.node("public.teams"), [("1",)], [DELETES]))


def _left(driver: Driver) -> tuple[int, int, int]:
    """(waiting relationships, relationships, Person nodes)."""
    pending = driver.execute_query(PENDING_COUNT).records[0]["c"]
    rels = driver.execute_query("MATCH ()-[r]->() RETURN count(r) AS c").records[0]["c"]
    people = driver.execute_query("MATCH (p:Person) RETURN count(p) AS c").records[0]["c"]
    return int(pending), int(rels), int(people)


def _race(driver: Driver, writer: GraphWriter, first: GraphBatch, second: GraphBatch) -> None:
    """Write `first` in a transaction held open, start `second` in another thread (its own transaction, as another
    worker's), give it time to reach the locks `first` holds, then commit `first` and let `second` finish."""
    failures: list[BaseException] = []
    done = threading.Event()

    def other() -> None:
        try:
            writer.write(second, 0)
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    with driver.session() as session:
        tx: Transaction = session.begin_transaction()
        writer.write_in(tx, first, 0, dt.datetime.now(dt.UTC), None)
        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        # The other transaction either blocks on a lock of `first` or runs past it; both orders must end right.
        done.wait(3.0)
        tx.commit()
    thread.join(60)
    assert not thread.is_alive(), "the second transaction never finished"
    assert not failures, failures


@pytest.mark.parametrize("person_first", [True, False], ids=["person-delete-first", "membership-delete-first"])
def test_a_person_and_its_membership_deleted_by_two_workers_leave_nothing_waiting(
    driver: Driver, mapping: Mapping, person_first: bool
) -> None:
    writer = GraphWriter(driver, mapping, awaiting=True, claim_epoch=False)
    writer.ensure_schema()
    _setup(mapping, writer)
    assert _left(driver) == (0, 2, 1)
    person, membership = _person_delete(mapping), _membership_delete(mapping)
    if person_first:
        _race(driver, writer, person, membership)
    else:
        _race(driver, writer, membership, person)
    assert _left(driver) == (0, 0, 0)


@pytest.mark.parametrize("team_first", [True, False], ids=["team-delete-first", "person-delete-first"])
def test_a_team_and_a_person_pointing_at_it_deleted_by_two_workers_leave_nothing_waiting(
    driver: Driver, mapping: Mapping, team_first: bool
) -> None:
    """The foreign-key case: the team's delete turns the person's MEMBER_OF into a waiting relationship owned by the
    person; the person's delete must remove it whichever commits first."""
    writer = GraphWriter(driver, mapping, awaiting=True, claim_epoch=False)
    writer.ensure_schema()
    _setup(mapping, writer)
    membership = _membership_delete(mapping)
    writer.write(membership, 0)  # the membership goes first here: only the foreign key is left between them
    assert _left(driver) == (0, 1, 1)
    team, person = _team_delete(mapping), _person_delete(mapping)
    if team_first:
        _race(driver, writer, team, person)
    else:
        _race(driver, writer, person, team)
    assert _left(driver) == (0, 0, 0)
