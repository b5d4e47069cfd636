"""Strict mode end to end: two-phase commit across PostgreSQL and Neo4j, crashes at every step, recovery.

Place in the data flow: coordinate/ against real servers. A strict transaction must leave both stores with the
write or neither, whatever step its process dies at (tests/integration/strict_child.py kills itself with SIGKILL
there), once `recover` has run; a Neo4j outage rolls PostgreSQL back; concurrent strict and ordinary writes, with
the Engine applying the queue beside them, end in the exact graph of the committed rows.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver

from oracle import NodeSpec, RelSpec, SchemaSpec, assert_graph_matches
from pg2neo.apply.cypher import EPOCH_LABEL, MARKER_LABEL, VERSION
from pg2neo.apply.engine import Engine
from pg2neo.apply.writer import STATEMENT_ROWS
from pg2neo.coordinate import (
    PreparedTransactionsDisabled,
    StrictCommitFailed,
    StrictCoordinator,
    StrictSettings,
    StrictTransaction,
    recover,
)
from pg2neo.coordinate.strict import STEPS
from pg2neo.devstack.stack import LocalStack
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import ApplySettings

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE team (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE person (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    score   integer,
    team_id integer REFERENCES team (id) ON DELETE SET NULL
);
CREATE TABLE member (
    person_id integer NOT NULL REFERENCES person (id) ON DELETE CASCADE,
    team_id   integer NOT NULL REFERENCES team (id) ON DELETE CASCADE,
    role      text,
    PRIMARY KEY (person_id, team_id)
);
INSERT INTO team SELECT i, 'team ' || i FROM generate_series(1, 4) i;
INSERT INTO person SELECT i, 'person ' || i, i, 1 + i % 4 FROM generate_series(1, 12) i;
INSERT INTO member SELECT i, 1 + (i + 1) % 4, 'member' FROM generate_series(1, 12) i;
"""

MAPPING = """
nodes:
  - table: team
    label: Team
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

SPEC = SchemaSpec(
    nodes=(
        NodeSpec("Team", ("id",), "SELECT id, name FROM team"),
        NodeSpec("Person", ("id",), "SELECT id, name, score, team_id FROM person"),
    ),
    rels=(
        RelSpec("IN_TEAM", "Person", "Team", "SELECT id AS s0, team_id AS e0 FROM person WHERE team_id IS NOT NULL"),
        RelSpec("MEMBER", "Person", "Team", "SELECT person_id AS s0, team_id AS e0, role FROM member"),
    ),
)


@dataclass
class Env:
    dsn: str
    servers: Connections
    driver: Driver
    mapping: Mapping
    mapping_path: Path
    conn: psycopg.Connection[Any]

    def pg_name(self, person_id: int) -> str | None:
        row = self.conn.execute("SELECT name FROM person WHERE id = %s", (person_id,)).fetchone()
        return None if row is None else str(row[0])

    def graph_name(self, person_id: int) -> str | None:
        record = self.driver.execute_query("MATCH (p:Person {id: $id}) RETURN p.name AS name", id=person_id).records
        return None if not record else str(record[0]["name"])

    def prepared(self) -> list[str]:
        rows = self.conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()").fetchall()
        return [str(r[0]) for r in rows]

    def markers(self) -> int:
        records = self.driver.execute_query(f"MATCH (m:{MARKER_LABEL}) RETURN count(m) AS c").records
        return int(records[0]["c"])

    def drain(self) -> None:
        engine = Engine(self.dsn, self.driver, self.mapping, ApplySettings(batch_rows=50))
        try:
            while engine.apply_next():
                pass
        finally:
            engine.close()


@pytest.fixture
def env(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Env]:
    path = tmp_path / "strict.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda t, r: None)
        finally:
            engine.close()
        yield Env(pg_dsn, graph, driver, mapping, path, conn)
        for gid in Env(pg_dsn, graph, driver, mapping, path, conn).prepared():
            conn.tpc_rollback(gid)


def test_strict_commit_writes_both_stores_before_returning(env: Env) -> None:
    coordinator = StrictCoordinator(env.driver, env.mapping)
    with psycopg.connect(env.dsn, autocommit=True) as app_conn:
        with coordinator.transaction(app_conn) as tx:
            tx.execute("UPDATE person SET name = 'Ada', score = 99 WHERE id = 1")
            tx.execute("DELETE FROM member WHERE person_id = 2")
            tx.execute("INSERT INTO person (id, name, team_id) VALUES (100, 'new', 3)")
        assert app_conn.autocommit, "the application's connection is handed back as it was"
    # no applier ran: the graph holds the write because the strict commit wrote it
    assert env.graph_name(1) == "Ada" and env.graph_name(100) == "new"
    records = env.driver.execute_query("MATCH (:Person {id: 2})-[r:MEMBER]->() RETURN count(r) AS c").records
    assert records[0]["c"] == 0
    assert env.prepared() == [] and env.markers() == 1
    queued = env.conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
    assert queued is not None and queued[0] > 0, "the strict transaction's events stay queued for the applier"
    report = recover(env.conn, env.driver)  # removes the marker of the settled transaction
    assert report.markers_removed == 1 and env.markers() == 0
    env.drain()
    assert_graph_matches(env.conn, env.driver, SPEC)


def test_failure_in_application_or_postgresql_never_touches_neo4j(env: Env) -> None:
    coordinator = StrictCoordinator(env.driver, env.mapping)
    with pytest.raises(psycopg.errors.ForeignKeyViolation), coordinator.transaction(env.dsn) as tx:
        tx.execute("UPDATE person SET name = 'ghost' WHERE id = 3")
        tx.execute("UPDATE person SET team_id = 999 WHERE id = 3")
    with pytest.raises(StrictCommitFailed, match="TRUNCATE"), coordinator.transaction(env.dsn) as tx:
        tx.execute("UPDATE person SET name = 'ghost' WHERE id = 3")
        tx.execute("TRUNCATE member")
    assert env.pg_name(3) == "person 3" and env.graph_name(3) == "person 3"
    assert env.markers() == 0 and env.prepared() == []


def _run_child(env: Env, stop: str, name: str) -> int:
    args = {
        "pg_dsn": env.dsn,
        "neo4j_uri": env.servers.neo4j_uri,
        "neo4j_user": env.servers.neo4j_user,
        "neo4j_password": env.servers.neo4j_password,
        "mapping": str(env.mapping_path),
        "stop": stop,
        "person_id": 5,
        "name": name,
    }
    child = Path(__file__).with_name("strict_child.py")
    done = subprocess.run([sys.executable, str(child), json.dumps(args)], timeout=120, capture_output=True)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr.decode()
    return done.returncode


def _wait_backends_gone(env: Env) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = env.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name <> 'pg2neo'"
        ).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the killed committer's session did not end")


@pytest.mark.parametrize("stop", STEPS)
def test_crash_at_each_step_then_recovery_leaves_both_or_neither(env: Env, stop: str) -> None:
    returncode = _run_child(env, stop, f"crashed {stop}")
    assert returncode == -signal.SIGKILL
    _wait_backends_gone(env)
    prepared_before = env.prepared()
    if stop in ("after_prepare", "after_neo4j_commit"):
        assert len(prepared_before) == 1
        # the transaction-level apply lock went with the prepared transaction (no backend holds it)
        row = env.conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid IS NULL").fetchone()
        assert row is not None and row[0] == 1
    if stop == "after_prepare":
        young = recover(env.conn, env.driver, prepared_timeout=3600)
        assert young.in_doubt == prepared_before and env.prepared() == prepared_before, "a young one is left alone"
    report = recover(env.conn, env.driver, prepared_timeout=0)
    assert env.prepared() == [] and env.markers() == 0
    pg, neo = env.pg_name(5), env.graph_name(5)
    assert pg == neo, f"PostgreSQL has {pg!r}, Neo4j {neo!r}"
    written = stop in ("after_neo4j_commit", "after_commit_prepared")
    assert pg == (f"crashed {stop}" if written else "person 5")
    assert report.committed == (prepared_before if stop == "after_neo4j_commit" else [])
    assert report.rolled_back == (prepared_before if stop == "after_prepare" else [])
    env.drain()  # the applier is not blocked by a leftover prepared transaction
    assert_graph_matches(env.conn, env.driver, SPEC)


def test_recover_command_settles_a_dead_committers_transaction(env: Env) -> None:
    assert _run_child(env, "after_neo4j_commit", "via cli") == -signal.SIGKILL
    _wait_backends_gone(env)
    cli_env = {
        **os.environ,
        "PG2NEO_PG_DSN": env.dsn,
        "PG2NEO_NEO4J__URI": env.servers.neo4j_uri,
        "PG2NEO_NEO4J__USER": env.servers.neo4j_user,
        "PG2NEO_NEO4J__PASSWORD": env.servers.neo4j_password,
        "PG2NEO_MAPPING": str(env.mapping_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pg2neo", "recover", "--json"], env=cli_env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    outcome = json.loads(done.stdout)
    assert len(outcome["committed"]) == 1 and outcome["markers_removed"] == 1
    assert env.prepared() == [] and env.pg_name(5) == env.graph_name(5) == "via cli"


def test_neo4j_down_rolls_postgresql_back(env: Env, owned_stack: LocalStack) -> None:
    coordinator = StrictCoordinator(env.driver, env.mapping)
    owned_stack.neo4j.stop()
    try:
        with pytest.raises(StrictCommitFailed) as failed, coordinator.transaction(env.dsn) as tx:
            tx.execute("UPDATE person SET name = 'lost' WHERE id = 6")
        assert failed.value.stage == "neo4j"
        assert env.pg_name(6) == "person 6" and env.prepared() == []
    finally:
        owned_stack.neo4j.start()
    assert env.graph_name(6) == "person 6" and env.markers() == 0
    with coordinator.transaction(env.dsn) as tx:  # and it works again once Neo4j is back
        tx.execute("UPDATE person SET name = 'back' WHERE id = 6")
    assert env.pg_name(6) == env.graph_name(6) == "back"


def test_short_prepared_timeout_is_refused() -> None:
    with pytest.raises(Exception, match="prepared_timeout"):
        StrictSettings(prepared_timeout=5, safety_margin=10)


def test_concurrent_strict_and_ordinary_writes_converge(env: Env) -> None:
    coordinator = StrictCoordinator(env.driver, env.mapping)
    errors: list[BaseException] = []
    outcome = {"strict": 0, "plain": 0, "conflicts": 0}
    lock = threading.Lock()
    stop_applier = threading.Event()

    def strict_writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(env.dsn) as conn:
                for i in range(15):
                    ids = sorted(rng.sample(range(1, 13), 3))  # sorted: no deadlock among writers
                    try:
                        with coordinator.transaction(conn) as tx:
                            for pid in ids:
                                tx.execute(
                                    "UPDATE person SET name = %s, score = %s, team_id = %s WHERE id = %s",
                                    (f"s{seed}-{i}", rng.randint(0, 100), rng.choice([None, 1, 2, 3, 4]), pid),
                                )
                            tx.execute(
                                "INSERT INTO member (person_id, team_id, role) VALUES (%s, %s, %s) "
                                "ON CONFLICT (person_id, team_id) DO UPDATE SET role = EXCLUDED.role",
                                (ids[0], rng.randint(1, 4), f"strict {seed}"),
                            )
                        with lock:
                            outcome["strict"] += 1
                    except psycopg.errors.DeadlockDetected:
                        with lock:
                            outcome["conflicts"] += 1
        except BaseException as exc:
            errors.append(exc)

    def plain_writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(env.dsn, autocommit=True) as conn:
                for i in range(30):
                    pid = rng.randint(1, 12)
                    try:
                        with conn.transaction():
                            conn.execute("UPDATE person SET name = %s WHERE id = %s", (f"p{seed}-{i}", pid))
                            if rng.random() < 0.3:
                                conn.execute(
                                    "DELETE FROM member WHERE person_id = %s AND team_id = %s", (pid, rng.randint(1, 4))
                                )
                        with lock:
                            outcome["plain"] += 1
                    except psycopg.errors.DeadlockDetected:
                        with lock:
                            outcome["conflicts"] += 1
        except BaseException as exc:
            errors.append(exc)

    def applier() -> None:
        engine = Engine(env.dsn, env.driver, env.mapping, ApplySettings(batch_rows=7))
        try:
            while not stop_applier.is_set():
                if engine.apply_next() is None:
                    time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.close()

    applying = threading.Thread(target=applier)
    applying.start()
    writers = [threading.Thread(target=strict_writer, args=(s,)) for s in range(3)]
    writers += [threading.Thread(target=plain_writer, args=(10 + s,)) for s in range(2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=300)
    stop_applier.set()
    applying.join(timeout=60)
    assert not errors, errors
    assert outcome["strict"] >= 30 and outcome["plain"] >= 40, outcome
    assert recover(env.conn, env.driver).markers_removed == outcome["strict"]
    env.drain()
    assert_graph_matches(env.conn, env.driver, SPEC)
    assert env.prepared() == []


def test_prepare_failure_leaves_the_application_connection_usable(env: Env) -> None:
    """PREPARE itself fails (a temporary table): rolled back, and the application's connection still works."""
    coordinator = StrictCoordinator(env.driver, env.mapping)
    with psycopg.connect(env.dsn) as app:
        with pytest.raises(StrictCommitFailed) as failed, coordinator.transaction(app) as tx:
            tx.execute("CREATE TEMP TABLE scratch (x integer)")  # PREPARE refuses transactions on temporary objects
            tx.execute("UPDATE person SET name = 'never' WHERE id = 2")
        assert failed.value.stage == "postgresql"
        app.execute("SELECT 1")
        app.commit()
        with coordinator.transaction(app) as tx:
            tx.execute("UPDATE person SET name = 'again' WHERE id = 2")
    assert env.pg_name(2) == env.graph_name(2) == "again" and env.prepared() == []


def test_recovery_racing_a_live_committer_never_splits_the_write(env: Env) -> None:
    """Recovery with no age limit runs while a live committer sits between PREPARE and its Neo4j commit."""

    def stall(step: str) -> None:
        if step == "after_prepare":
            time.sleep(2.0)  # a slow committer (GC pause, overloaded host), not a wait for an outcome

    outcome: list[str] = []

    def commit() -> None:
        try:
            with StrictCoordinator(env.driver, env.mapping, on_step=stall).transaction(env.dsn) as tx:
                tx.execute("UPDATE person SET name = 'raced' WHERE id = 7")
            outcome.append("committed")
        except StrictCommitFailed:
            outcome.append("rolled back")

    committer = threading.Thread(target=commit)
    committer.start()
    deadline = time.monotonic() + 30
    while not env.prepared() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert env.prepared(), "the committer never prepared"
    recover(env.dsn, env.driver, prepared_timeout=0)
    committer.join(timeout=60)
    assert outcome, "the committer did not finish"
    recover(env.dsn, env.driver, prepared_timeout=0)
    assert env.prepared() == [] and env.markers() == 0
    assert env.pg_name(7) == env.graph_name(7) == ("raced" if outcome == ["committed"] else "person 7")


def test_prepared_transactions_disabled_is_a_clear_error(
    pg_dsn: str, graph: Connections, owned_stack: LocalStack, tmp_path: Path
) -> None:
    """max_prepared_transactions = 0: strict commits and `pg2neo recover` refuse with the fix; `run` goes on."""
    path = tmp_path / "strict.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        install.init(conn, driver, load_mapping(path, conn))
    owned_stack.postgres.stop()
    owned_stack.postgres.start({"max_prepared_transactions": "0"})
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
            assert conn.execute("SHOW max_prepared_transactions").fetchone() == ("0",)
            coordinator = StrictCoordinator(driver, load_mapping(path, conn))
            refusal = pytest.raises(PreparedTransactionsDisabled, match="max_prepared_transactions = 0")
            with refusal as refused, coordinator.transaction(pg_dsn) as tx:
                tx.execute("UPDATE person SET name = 'never' WHERE id = 1")
            assert "restart PostgreSQL" in str(refused.value)
            assert conn.execute("SELECT name FROM person WHERE id = 1").fetchone() == ("person 1",)
        cli_env = {
            **os.environ,
            "PG2NEO_PG_DSN": pg_dsn,
            "PG2NEO_NEO4J__URI": graph.neo4j_uri,
            "PG2NEO_NEO4J__PASSWORD": graph.neo4j_password,
            "PG2NEO_MAPPING": str(path),
        }
        recover_cmd = [sys.executable, "-m", "pg2neo", "recover"]
        done = subprocess.run(recover_cmd, env=cli_env, capture_output=True, timeout=120, check=False)
        assert done.returncode == 2, done.stdout.decode()
        assert b"max_prepared_transactions" in done.stdout + done.stderr
        # The asynchronous service does not need two-phase commit: it says strict mode is unavailable and runs.
        ran = subprocess.run(
            [sys.executable, "-m", "pg2neo", "run", "--until-empty"], env=cli_env, capture_output=True, timeout=120
        )
        assert ran.returncode == 0, ran.stderr.decode()[-3000:]
        assert b"strict_mode_unavailable" in ran.stderr
    finally:
        owned_stack.postgres.stop()
        owned_stack.postgres.start()


def _every_kind_of_write(tx: StrictTransaction, first_new_id: int, new_people: int) -> None:
    """Node upserts and deletes, a foreign-key link moved, removed and created, join rows inserted, updated, moved
    to another key and deleted (directly and by cascade)."""
    tx.execute(
        "UPDATE person SET name = 'moved', team_id = CASE WHEN team_id = 4 THEN 1 ELSE team_id + 1 END WHERE id = 1"
    )
    tx.execute("UPDATE person SET team_id = NULL WHERE id = 2")
    tx.execute("DELETE FROM person WHERE id = 3")  # its member row goes by cascade, its node with its links
    tx.execute("UPDATE member SET role = 'changed' WHERE person_id = 4")
    tx.execute("UPDATE member SET team_id = CASE WHEN team_id = 4 THEN 1 ELSE team_id + 1 END WHERE person_id = 5")
    tx.execute("DELETE FROM member WHERE person_id = 6")
    tx.execute(
        "INSERT INTO person (id, name, score, team_id) "
        "SELECT i, 'new ' || i, i, 1 + i %% 4 FROM generate_series(%s::integer, %s::integer) i",
        (first_new_id, first_new_id + new_people - 1),
    )
    tx.execute("INSERT INTO member (person_id, team_id, role) VALUES (%s, 2, 'joined')", (first_new_id,))


@pytest.mark.parametrize("new_people", [1, STATEMENT_ROWS + 1], ids=["one_statement", "chunked"])
def test_strict_commit_alone_leaves_the_graph_equal_to_the_rows(env: Env, new_people: int) -> None:
    """No applier runs: right after the strict commit the graph is exactly the mapping of the rows, whether the write
    went as one statement with the marker (coordinate/write.py) or, too big for one, through the writer's chunks."""
    coordinator = StrictCoordinator(env.driver, env.mapping)
    with coordinator.transaction(env.dsn) as tx:
        _every_kind_of_write(tx, 100, new_people)
    assert env.prepared() == [] and env.markers() == 1
    assert_graph_matches(env.conn, env.driver, SPEC)


def test_strict_commit_behind_the_graphs_epoch_moves_the_sequence_past_it(env: Env) -> None:
    """The graph has seen a newer epoch (a second source, a restored backup): the strict write is rolled back in
    Neo4j, the epoch sequence moved past the graph's, and the write lands once, stamped with the new epoch."""
    ahead = 1_000_000
    env.driver.execute_query(f"MATCH (h:{EPOCH_LABEL} {{name: 'epoch'}}) SET h.high = $high", high=ahead)
    with StrictCoordinator(env.driver, env.mapping).transaction(env.dsn) as tx:
        tx.execute("UPDATE person SET name = 'after' WHERE id = 8")
    records = env.driver.execute_query(
        f"MATCH (p:Person {{id: 8}}) RETURN p.name AS name, p.{VERSION} AS version"
    ).records
    assert records[0]["name"] == "after" and records[0]["version"] > ahead
    assert env.pg_name(8) == "after" and env.prepared() == [] and env.markers() == 1
