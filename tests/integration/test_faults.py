"""Fault injection: processes and servers really killed, connections really cut, under continuous write load.

Place in the data flow: end to end, the service against real PostgreSQL and Neo4j. Each test ends with an exact
comparison of the whole graph against the graph of the PostgreSQL rows (`assert_graph_exact`): nothing lost.
Longer variants are in test_soak.py (`make soak`).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from neo4j import Driver, GraphDatabase
from prometheus_client import REGISTRY

from fault_run import KILLED_AFTER_COMMIT
from faultproxy import FaultProxy, assert_graph_exact
from pg2neo.apply.engine import BatchResult, Engine
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema
from pg2neo.demo.workload import writer_loop
from pg2neo.devstack.stack import LocalStack
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service, run_snapshot
from pg2neo.runtime.status import status_report
from pg2neo.settings import ApplySettings

pytestmark = pytest.mark.integration

SMALL = ApplySettings(batch_rows=25, poll_interval=0.05)


@dataclass
class Synced:
    """A demo database loaded, installed and snapshotted into the (wiped) graph."""

    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping: Mapping
    servers: Connections


@pytest.fixture
def synced(pg_dsn: str, graph: Connections) -> Iterator[Synced]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        load_schema(conn)
        generate(conn, 15)
        mapping = load_mapping(mapping_path(), conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, SMALL)
        run_snapshot(engine, Stopper(), lambda t, r: None)
        engine.close()
        synced = Synced(pg_dsn, conn, driver, mapping, graph)
        try:
            yield synced
        finally:
            stop_leftovers()
            synced.conn.close()  # a test may have replaced the connection (PostgreSQL restarted)


def stop_leftovers() -> None:
    """Stop the services and loads a failed test left running, before its database is dropped: a service still
    applying then would write its last batch into the next test's graph."""
    for service in Service.running:
        service.stopper.event.set()
    for load in Load.running:
        load._stop.set()
    for thread in [s.thread for s in Service.running] + [load.thread for load in Load.running]:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a service or load thread did not stop"
    for service in Service.running:
        service.engine.close()
    Service.running.clear()
    Load.running.clear()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.05)


def applier_pid(conn: psycopg.Connection[Any], since: Any = None) -> int | None:
    """The backend of the applier's connection (application_name 'pg2neo'), opened after `since` if given."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg2neo' AND datname = current_database() "
        "AND (%s::timestamptz IS NULL OR backend_start >= %s::timestamptz) ORDER BY backend_start DESC LIMIT 1",
        (since, since),
    ).fetchone()
    return None if row is None else int(row[0])


def wait_connected(conn: psycopg.Connection[Any], proc: subprocess.Popen[bytes], since: Any) -> None:
    wait_for(lambda: applier_pid(conn, since) is not None or proc.poll() is not None, 60, "the applier to connect")


def conn_now(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def queue_depth(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
    return int(row[0]) if row else 0


class Load:
    """Continuous random writes to the demo schema (writer_loop, in 2-second rounds) in a thread until stopped."""

    running: ClassVar[list[Load]] = []

    def __init__(self, dsn: str, rate: float = 40, seed: int = 1) -> None:
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(dsn, rate, seed), daemon=True)
        self.thread.start()
        Load.running.append(self)

    def _run(self, dsn: str, rate: float, seed: int) -> None:
        while not self._stop.is_set():
            for name, value in writer_loop(dsn, 2.0, rate, seed).items():
                self.counts[name] = self.counts.get(name, 0) + value
            seed += 1

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        assert sum(v for k, v in self.counts.items() if k != "connection_errors") > 0, "the load wrote nothing"
        return self.counts


class Service:
    """run_service in a thread (the same loop `pg2neo run` runs), for faults that leave the process alive."""

    running: ClassVar[list[Service]] = []

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stopper = Stopper()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        Service.running.append(self)

    def _run(self) -> None:
        try:
            run_service(self.engine, self.stopper, 0.05)
        except BaseException as exc:  # the test asserts there was none
            self.error = exc

    def stop(self) -> None:
        self.stopper.event.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        self.engine.close()
        assert self.error is None, f"the service loop exited with {self.error!r}"


def drain_and_compare(s: Synced, engine: Engine | None = None) -> dict[str, int]:
    own = engine is None
    engine = engine or Engine(s.dsn, s.driver, s.mapping, ApplySettings(batch_rows=2000))
    run_service(engine, Stopper(), 0.05, until_empty=True)
    if own:
        engine.close()
    assert queue_depth(s.conn) == 0
    dead = s.conn.execute("SELECT count(*) FROM pg2neo.dead_letters").fetchone()
    assert dead is not None and dead[0] == 0
    return assert_graph_exact(s.conn, s.driver, s.mapping)


# -- the real `pg2neo run` process, SIGKILLed -------------------------------------------------------------------


def pg_password(s: Synced) -> str:
    """The PostgreSQL password of the test servers: no line of a service's output may show it."""
    password = psycopg.conninfo.conninfo_to_dict(s.dsn).get("password")
    assert password, "the test servers' DSN carries a password"
    return str(password)


def service_env(s: Synced, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG2NEO_")}
    env.update(
        PG2NEO_PG_DSN=s.dsn,
        PG2NEO_NEO4J__URI=s.servers.neo4j_uri,
        PG2NEO_NEO4J__PASSWORD=s.servers.neo4j_password,
        PG2NEO_MAPPING=str(mapping_path()),
        PG2NEO_APPLY__BATCH_ROWS="100",
        PG2NEO_APPLY__POLL_INTERVAL="0.05",
        **extra,
    )
    return env


# `pg2neo` with its fault points armed from PG2NEO_TEST_* variables (tests/fault_run.py).
FAULT_RUN = Path(__file__).resolve().parents[1] / "fault_run.py"


def start_service(env: dict[str, str], *args: str, faults: bool = False) -> subprocess.Popen[bytes]:
    command = [str(FAULT_RUN)] if faults else ["-m", "pg2neo"]
    return subprocess.Popen(
        [sys.executable, *command, "--log-level", "debug", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_sigkill_run_process_under_load(synced: Synced) -> None:
    """21 SIGKILLs of `pg2neo run` at random points, a third of them between the Neo4j commit and the queue ack."""
    assert sigkill_rounds(synced, 21) == {"random_point": 14, "after_neo4j_commit": 7}


def sigkill_rounds(synced: Synced, total: int) -> dict[str, int]:
    """Start and SIGKILL `pg2neo run` `total` times under load, then drain and compare; returns the kills."""
    rng = random.Random(4)
    audit_before = audit_rows(synced.conn)
    load = Load(synced.dsn, rate=40)
    output = b""
    kills = {"random_point": 0, "after_neo4j_commit": 0}
    while sum(kills.values()) < total:
        after_commit = sum(kills.values()) % 3 == 2
        env = service_env(synced, PG2NEO_TEST_KILL_AFTER_COMMIT="0.5") if after_commit else service_env(synced)
        since = conn_now(synced.conn)
        proc = start_service(env, faults=after_commit)
        if after_commit:
            try:
                proc.wait(timeout=60)  # dies by itself at the hook, once Neo4j committed and before the ack
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("no SIGKILL at the after-commit fault point within 60 s") from None
        else:
            # A random point once it is connected: reading, writing to Neo4j, acking or idle.
            wait_connected(synced.conn, proc, since)
            time.sleep(rng.uniform(0.0, 1.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.stdout is not None
        output += proc.stdout.read()
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, output[-3000:].decode(errors="replace")
        kills["after_neo4j_commit" if after_commit else "random_point"] += 1
    counts = load.stop()
    applied_between_kills = audit_rows(synced.conn) - audit_before
    drain_and_compare(synced)
    text = output.decode(errors="replace")
    assert text.count("service_started") == total and applied_between_kills > 0
    assert text.count(KILLED_AFTER_COMMIT) == kills["after_neo4j_commit"]
    assert pg_password(synced) not in text and synced.servers.neo4j_password not in text
    print(f"kills={kills} writes={counts} batches_committed_between_kills={applied_between_kills}")
    return kills


# -- servers and connections lost, with the service loop running -----------------------------------------------


def retries_so_far() -> float:
    return REGISTRY.get_sample_value("pg2neo_retries_total") or 0.0


def audit_rows(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg2neo.audit WHERE kind = 'changes'").fetchone()
    return int(row[0]) if row else 0


def wait_applied(s: Synced, seconds: float = 90) -> None:
    """Poll until the service commits another batch (the queue has work: the load keeps writing)."""
    before = audit_rows(s.conn)
    wait_for(lambda: audit_rows(s.conn) > before, seconds, "another applied batch")


def test_neo4j_stopped_under_load(synced: Synced, owned_stack: LocalStack) -> None:
    neo4j_outage(synced, owned_stack, 30.0)


def service_states(conn: psycopg.Connection[Any]) -> list[str]:
    return [service["state"] for service in status_report(conn)["services"]]


def metric(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def cli_status(s: Synced) -> dict[str, Any]:
    """`pg2neo status --json`, the real command in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "pg2neo", "status", "--json"],
        env=service_env(s),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def neo4j_outage(synced: Synced, owned_stack: LocalStack, outage: float) -> None:
    """Neo4j killed under load: within seconds, and all through the outage, the figures say so.

    The driver retries a batch's transaction for up to 30 s by itself, so the apply loop alone would keep saying
    `running` and `servers_reachable 1`, and its gauges would keep their last values, for that long."""
    load = Load(synced.dsn)
    service = Service(Engine(synced.dsn, synced.driver, synced.mapping, SMALL))
    wait_applied(synced)
    retries = retries_so_far()
    owned_stack.neo4j.kill()
    down_at = time.monotonic()
    wait_for(lambda: metric("pg2neo_servers_reachable") == 0, 10, "servers_reachable 0 within seconds")
    # `pg2neo status` says the service is waiting, and why, within seconds.
    wait_for(lambda: service_states(synced.conn) == ["waiting"], 10, "status to report the service waiting")
    services = status_report(synced.conn)["services"]
    assert "waiting for the servers" in services[0]["detail"] and "Neo4j" in services[0]["detail"], services
    # The queue grows in PostgreSQL while nothing is applied: the gauges measure it, not the last batch.
    wait_for(lambda: (metric("pg2neo_queue_depth") or 0) > 0, 10, "the queue depth gauge to show the backlog")
    first_lag = metric("pg2neo_lag_seconds") or 0.0
    wait_for(lambda: (metric("pg2neo_lag_seconds") or 0.0) > first_lag + 2, 15, "the lag gauge to grow")
    shown = cli_status(synced)
    assert shown["queue_depth"] > 0 and shown["lag_seconds"] > 2, shown
    assert [s["state"] for s in shown["services"]] == ["waiting"], shown["services"]
    wait_for(lambda: retries_so_far() > retries, 60, "the service to count its retries")
    time.sleep(max(0.0, outage - (time.monotonic() - down_at)))  # the outage itself, not a wait for a condition
    assert metric("pg2neo_servers_reachable") == 0 and service_states(synced.conn) == ["waiting"]
    assert (metric("pg2neo_lag_seconds") or 0.0) > min(outage, 60) / 2
    assert service.thread.is_alive() and service.error is None
    owned_stack.neo4j.start()
    wait_applied(synced, 120)
    wait_for(lambda: metric("pg2neo_servers_reachable") == 1, 30, "servers_reachable 1 again")
    # the batch's commit lands just before the service records "running": poll for it, with a deadline
    wait_for(lambda: service_states(synced.conn) == ["running"], 30, "status to report the service running again")
    load.stop()
    wait_for(lambda: queue_depth(synced.conn) == 0, 120, "the queue to drain")
    wait_for(lambda: metric("pg2neo_queue_depth") == 0, 10, "the queue depth gauge to reach 0")
    assert [s["state"] for s in cli_status(synced)["services"]] == ["running"]
    service.stop()
    drain_and_compare(synced)


def test_postgres_restarted_under_load(synced: Synced, owned_stack: LocalStack) -> None:
    load = Load(synced.dsn)
    service = Service(Engine(synced.dsn, synced.driver, synced.mapping, SMALL))
    wait_applied(synced)
    retries = retries_so_far()
    owned_stack.postgres.kill()  # a crash: connections die mid-batch, the server restarts with crash recovery
    owned_stack.postgres.start()
    synced.conn.close()
    synced.conn = psycopg.connect(synced.dsn, autocommit=True)
    wait_applied(synced, 120)
    assert retries_so_far() > retries
    counts = load.stop()
    assert counts["connection_errors"] > 0  # the writers felt it too
    wait_for(lambda: queue_depth(synced.conn) == 0, 120, "the queue to drain")
    service.stop()
    drain_and_compare(synced)


def test_backend_terminated_mid_batch(synced: Synced) -> None:
    load = Load(synced.dsn)
    service = Service(Engine(synced.dsn, synced.driver, synced.mapping, SMALL))
    retries = retries_so_far()
    terminated = 0
    for _ in range(8):
        wait_applied(synced)
        pid = applier_pid(synced.conn)
        if pid is not None and synced.conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,):
            terminated += 1
    assert terminated >= 6 and retries_so_far() > retries
    load.stop()
    wait_for(lambda: queue_depth(synced.conn) == 0, 120, "the queue to drain")
    service.stop()
    drain_and_compare(synced)


def test_bolt_connections_cut_by_proxy(synced: Synced) -> None:
    host, port = synced.servers.neo4j_uri.split("://", 1)[1].rsplit(":", 1)
    with FaultProxy(host, int(port)) as proxy:
        auth = (synced.servers.neo4j_user, synced.servers.neo4j_password)
        with GraphDatabase.driver(f"bolt://127.0.0.1:{proxy.port}", auth=auth) as driver:
            load = Load(synced.dsn)
            service = Service(Engine(synced.dsn, driver, synced.mapping, SMALL))
            for _ in range(8):
                wait_applied(synced)
                wait_for(lambda: proxy.open_connections > 0, 30, "a Bolt connection")
                proxy.cut_all()
            assert proxy.cuts >= 8
            load.stop()
            wait_for(lambda: queue_depth(synced.conn) == 0, 120, "the queue to drain")
            service.stop()
    drain_and_compare(synced)


ITEMS_SCHEMA = "CREATE TABLE item (id integer PRIMARY KEY, v text NOT NULL, n integer NOT NULL DEFAULT 0)"
ITEMS_MAPPING = "nodes:\n  - table: item\n    label: Item\n"


def _hammer(dsn: str, seed: int, seconds: float) -> int:
    """Update, delete, re-insert and delete+re-insert (one transaction) the same ten keys as the other writers."""
    rng = random.Random(seed)
    done = 0
    deadline = time.monotonic() + seconds
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            key, value = rng.randint(1, 10), f"w{seed}-{done}"
            try:
                with conn.transaction():
                    op = rng.choice(("update", "delete", "upsert", "reinsert"))
                    if op in ("delete", "reinsert"):
                        conn.execute("DELETE FROM item WHERE id = %s", (key,))
                    if op in ("upsert", "reinsert"):
                        conn.execute(
                            "INSERT INTO item (id, v) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, "
                            "n = item.n + 1",
                            (key, value),
                        )
                    if op == "update":
                        conn.execute("UPDATE item SET v = %s, n = n + 1 WHERE id = %s", (value, key))
                done += 1
            except (psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation):
                pass  # concurrent re-inserts of one key: one of them loses, as in real life
    return done


def test_concurrent_writers_on_the_same_keys(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(ITEMS_MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(ITEMS_SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        service = Service(Engine(pg_dsn, driver, mapping, ApplySettings(batch_rows=7, poll_interval=0.01)))
        results: list[int] = []
        writers = [
            threading.Thread(target=lambda i=i: results.append(_hammer(pg_dsn, i, 8.0)), daemon=True) for i in range(4)
        ]
        for w in writers:
            w.start()
        for w in writers:
            w.join(timeout=60)
        assert len(results) == 4 and sum(results) > 100
        wait_for(lambda: queue_depth(conn) == 0, 60, "the queue to drain")
        service.stop()
        assert conn.execute("SELECT count(*) FROM pg2neo.dead_letters").fetchone() == (0,)
        assert_graph_exact(conn, driver, mapping)


# -- schema drift while `pg2neo run` runs ------------------------------------------------------------------------


def test_schema_drift_stops_run_clearly_and_keeps_the_queue(synced: Synced) -> None:
    env = service_env(synced)
    since = conn_now(synced.conn)
    proc = start_service(env)
    wait_connected(synced.conn, proc, since)
    synced.conn.execute("ALTER TABLE content_items RENAME COLUMN title TO headline")
    synced.conn.execute(
        "UPDATE content_items SET headline = headline || '!' WHERE id IN (SELECT min(id) FROM content_items)"
    )
    out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 3, text[-3000:]  # stopped for the operator (pg2neo.cli.exits.NEEDS_OPERATOR)
    assert "content_items" in text and "title" in text and "pg2neo init" in text
    # the schema watch reports it (`schema_changed`), or the batch's read does first (`schema_drift`)
    assert "schema_changed" in text or "schema_drift" in text
    assert queue_depth(synced.conn) >= 1  # the event stays queued
    assert pg_password(synced) not in text
    # Put the column back: the kept event applies, nothing was lost.
    synced.conn.execute("ALTER TABLE content_items RENAME COLUMN headline TO title")
    drain_and_compare(synced)


# -- snapshot killed and resumed; graceful stop ------------------------------------------------------------------


def snapshot_progress(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, bool]]:
    rows = conn.execute("SELECT tbl, rows_done, done FROM pg2neo.snapshot_progress").fetchall()
    return {tbl: (int(done_rows), bool(done)) for tbl, done_rows, done in rows}


def installed(pg_dsn: str, conn: psycopg.Connection[Any], driver: Driver, graph: Connections) -> Synced:
    """A demo database loaded and installed, not snapshotted yet."""
    load_schema(conn)
    generate(conn, 40)
    mapping = load_mapping(mapping_path(), conn)
    install.init(conn, driver, mapping)
    return Synced(pg_dsn, conn, driver, mapping, graph)


# Rows per snapshot page of the test below: `tenants` (2 rows) is one page, `users` (8 rows) three.
KILLED_SNAPSHOT_PAGE_ROWS = 3


def test_snapshot_sigkilled_then_resumed_under_load(pg_dsn: str, graph: Connections) -> None:
    """A `pg2neo snapshot` killed part-way resumes from its last committed page, and with the live changes queued
    meanwhile the graph ends equal to the rows: nothing lost, nothing applied out of order.

    The kill lands mid-table by construction, not by timing: an open Neo4j transaction of the test holds the
    uniqueness lock of the first `User` of the snapshot's second `users` page (MERGEd, not committed), so that
    page's write waits and the snapshot cannot get past it. `users` is the second table, and the load never
    inserts or deletes users, so the held row is in that page whatever the load does."""
    page = KILLED_SNAPSHOT_PAGE_ROWS
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        s = installed(pg_dsn, conn, driver, graph)
        mapping = s.mapping
        users = mapping.node("public.users")
        assert [e.table for e in mapping.entries][:2] == ["public.tenants", "public.users"]
        assert users.key_columns == ("id",) and len(users.key_props) == 1
        row = conn.execute("SELECT id FROM users ORDER BY id OFFSET %s LIMIT 1", (page,)).fetchone()
        assert row is not None, "the demo data has more than one page of users"
        env = service_env(s, PG2NEO_APPLY__SNAPSHOT_BATCH_ROWS=str(page))
        load = Load(pg_dsn, rate=40)
        with driver.session() as session:
            hold = session.begin_transaction()
            try:
                hold.run(f"MERGE (u:`{users.label}` {{`{users.key_props[0]}`: $id}})", id=str(row[0])).consume()
                first = subprocess.Popen(
                    [sys.executable, "-m", "pg2neo", "snapshot"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                wait_for(
                    lambda: snapshot_progress(conn).get(users.table, (0, False))[0] > 0 or first.poll() is not None,
                    120,
                    "the first page of users to commit",
                )
                assert first.poll() is None, "the snapshot ended before the kill"
                first.send_signal(signal.SIGKILL)
                out, _ = first.communicate(timeout=60)
            finally:
                hold.rollback()  # only after the kill: the held page must not commit before it
        assert first.returncode == -signal.SIGKILL, out.decode(errors="replace")[-3000:]
        progress = snapshot_progress(conn)
        # Killed mid-table: the first table done, one page of the second, nothing of the later ones.
        assert progress == {"public.tenants": (2, True), users.table: (page, False)}, progress
        loaded_before = sum(n for n, _ in progress.values())

        # resumed with larger pages: only the last key and the rows done carry over, not the page size
        env = service_env(s, PG2NEO_APPLY__SNAPSHOT_BATCH_ROWS="20")
        second = subprocess.run(
            [sys.executable, "-m", "pg2neo", "snapshot"], env=env, capture_output=True, timeout=600, check=False
        )
        assert second.returncode == 0, second.stdout.decode(errors="replace")[-3000:]
        text = second.stdout.decode(errors="replace") + second.stderr.decode(errors="replace")
        assert "snapshot_progress" in text
        after = snapshot_progress(conn)
        assert all(done for _, done in after.values()) and set(after) == {e.table for e in mapping.entries}
        # Resumed, not restarted: no table's count went back, and the tables done before the kill stayed done.
        for table, (rows_done, done) in progress.items():
            assert after[table][0] >= rows_done and (after[table][1] or not done)
        match = re.search(r"snapshot: ([\d,]+) rows", text)
        assert match is not None, text[-3000:]
        loaded_by_second = int(match.group(1).replace(",", ""))
        assert loaded_by_second == sum(n for n, _ in after.values()) - loaded_before
        load.stop()
        drain_and_compare(s)
        print(f"rows loaded before the kill: {loaded_before}; after resume: {sum(n for n, _ in after.values())}")


def test_snapshot_pipelined_alongside_run_under_load(pg_dsn: str, graph: Connections) -> None:
    """The snapshot holds the apply lock for a window of pages and reads the next page while one is written; `run`
    gets its turn between windows, and with live writes going on the graph ends equal to the rows."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        s = installed(pg_dsn, conn, driver, graph)
        mapping = s.mapping
        load = Load(pg_dsn, rate=40)
        service = Service(Engine(pg_dsn, driver, mapping, SMALL))
        engine = Engine(pg_dsn, driver, mapping, ApplySettings(snapshot_batch_rows=20, snapshot_hold_seconds=0.3))
        pages: list[BatchResult] = []
        loaded = run_snapshot(engine, Stopper(), lambda table, result: pages.append(result))
        engine.close()
        assert loaded == sum(p.events for p in pages) and sum(p.done for p in pages) == len(mapping.entries)
        load.stop()
        wait_for(lambda: queue_depth(conn) == 0, 120, "the queue to drain")
        service.stop()
        kinds = [str(r[0]) for r in conn.execute("SELECT kind FROM pg2neo.audit ORDER BY id").fetchall()]
        first, last = kinds.index("snapshot"), len(kinds) - 1 - kinds[::-1].index("snapshot")
        # `run` applied batches between the snapshot's windows: the lock was released and taken again
        assert "changes" in kinds[first:last], kinds
        # and windows held several pages: runs of consecutive snapshot pages with no other batch between them
        runs = "".join("s" if k == "snapshot" else "." for k in kinds[first : last + 1]).split(".")
        assert max(len(run) for run in runs) >= 3, kinds
        epochs = [int(r[0]) for r in conn.execute("SELECT epoch FROM pg2neo.audit WHERE epoch IS NOT NULL ORDER BY id")]
        assert epochs == sorted(epochs), "batches were recorded out of epoch order"
        drain_and_compare(s)


def test_sigterm_finishes_the_batch_and_exits_cleanly(synced: Synced) -> None:
    load = Load(synced.dsn, rate=60)
    env = service_env(synced)
    proc = start_service(env)
    wait_connected(synced.conn, proc, None)
    wait_applied(synced)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "stopping" in text and "SIGTERM" in text and "service_stopped" in text
    load.stop()
    drain_and_compare(synced)
