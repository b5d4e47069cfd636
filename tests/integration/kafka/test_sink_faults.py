"""The Kafka sink under faults, with writes going on: real processes killed, real servers stopped and started.

Place in the data flow: capture (Debezium in Connect) -> transport (Kafka) -> apply (`pg2neo sink run` processes).
After each run the graph must equal the mapping of PostgreSQL's rows (the oracle counts every node and relationship:
a lost, duplicated or resurrected one shows), `verify` must be clean, and no relationship may be left waiting.

- 20 SIGKILLs of a sink worker at random moments (static membership: the restarted worker gets its partitions back
  at once), while a writer commits transactions that touch every table.
- One run with two workers (a rebalance when the second joins and when the first leaves), a broker restart, a
  Kafka Connect restart, and Neo4j down for 30 s.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from kafka_support import KafkaSource
from sink_support import (
    MAPPING,
    OTHER_TEAM,
    SCHEMA,
    SPEC,
    TEAM,
    mapping_of,
    pending_relationships,
    prepare_graph,
    seed,
    sink_process,
    wait_in_sync,
    worker_logs,
)

from oracle import assert_graph_matches
from pg2neo.devstack.stack import LocalStack
from pg2neo.runtime.connections import Connections

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

KILLS = 20


@contextmanager
def writes_going_on(source: KafkaSource, per_second: float = 20.0) -> Iterator[list[int]]:
    """A writer committing transactions on every table until the block ends (bounded rate; retried while
    PostgreSQL is fine, which it stays). Yields the count of transactions committed."""
    stop = threading.Event()
    done = [0]
    failures: list[BaseException] = []

    def run() -> None:
        rng = random.Random(5)
        try:
            with psycopg.connect(source.dsn, autocommit=True) as conn:
                n = 1000
                while not stop.is_set():
                    started = time.monotonic()
                    n += 1
                    team = TEAM if n % 3 else OTHER_TEAM
                    with conn.transaction():
                        conn.execute("INSERT INTO people (id, name, team_id) VALUES (%s, 'w', %s)", (n, team))
                        conn.execute("INSERT INTO memberships VALUES (%s, %s, 'w', %s)", (n, team, n))
                        conn.execute("UPDATE memberships SET weight = weight + 1 WHERE person_id = %s", (n - 1,))
                        conn.execute(
                            "INSERT INTO documents (title, body, author_id) VALUES ('w', repeat('x', 3000), %s)", (n,)
                        )
                    if n % 4 == 0:  # a person and everything that points at it go in one transaction
                        victim = n - 2
                        with conn.transaction():
                            conn.execute("DELETE FROM memberships WHERE person_id = %s", (victim,))
                            conn.execute(
                                "DELETE FROM comments WHERE document_id IN "
                                "(SELECT id FROM documents WHERE author_id = %s)",
                                (victim,),
                            )
                            conn.execute("DELETE FROM documents WHERE author_id = %s", (victim,))
                            conn.execute("DELETE FROM people WHERE id = %s", (victim,))
                    if n % 5 == 0:
                        conn.execute("UPDATE people SET name = 'moved', team_id = NULL WHERE id = %s", (n - 3,))
                        conn.execute(
                            "INSERT INTO comments (id, document_id, text) "
                            "SELECT %s, id, 'c' FROM documents WHERE author_id = %s",
                            (n, n - 1),
                        )
                    if n % 7 == 0:  # a node key change of a document others point at by its id
                        conn.execute(
                            "UPDATE documents SET neo4j_node_id = gen_random_uuid(), title = 'rekeyed' "
                            "WHERE author_id = %s",
                            (n - 1,),
                        )
                    done[0] += 1
                    pause = rng.uniform(0.5, 1.5) / per_second - (time.monotonic() - started)
                    if pause > 0:
                        time.sleep(pause)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def _check(source: KafkaSource, graph: Connections) -> None:
    mapping = mapping_of(source)
    with graph.driver() as driver:
        try:
            wait_in_sync(source, driver, mapping, timeout=420)
        except BaseException:
            print(worker_logs(source))  # shown by pytest with the failure
            raise
        with psycopg.connect(source.dsn) as conn:
            assert_graph_matches(conn, driver, SPEC)  # counts every relationship: a duplicate or a loss shows
    # A relationship left waiting by two workers' concurrent transactions is settled by the sinks' periodic sweep.
    deadline = time.monotonic() + 60
    while pending_relationships(graph) and time.monotonic() < deadline:
        time.sleep(2)
    with graph.driver() as driver:
        left = driver.execute_query("MATCH (p:_Pg2neoPending) RETURN properties(p) AS p LIMIT 5").records
    assert pending_relationships(graph) == 0, [dict(r["p"]) for r in left]


def _source(factory: Callable[[str, str], KafkaSource], graph: Connections) -> KafkaSource:
    source = factory(SCHEMA, MAPPING)
    seed(source)
    with graph.driver() as driver:
        prepare_graph(driver, mapping_of(source))
    source.register()
    return source


def test_twenty_sigkills_of_a_worker_lose_and_duplicate_nothing(
    graph: Connections, kafka_source_factory: Callable[[str, str], KafkaSource]
) -> None:
    source = _source(kafka_source_factory, graph)
    rng = random.Random(11)
    kills = 0
    with writes_going_on(source) as done:
        for _ in range(KILLS):
            worker = sink_process(source, "--instance-id", "worker-a", "--batch-rows", "200")
            time.sleep(rng.uniform(1.5, 4.0))  # started, then killed mid-stream at a random moment
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
    assert kills == KILLS and done[0] > 100
    worker = sink_process(source, "--instance-id", "worker-a")
    try:
        _check(source, graph)
    finally:
        _stop(worker)


# This test found three losses (all fixed: a retry that skipped a message, replayed events outranking newer ones, and
# a waiting relationship left by a person's delete racing its membership's delete in another worker: see
# tests/integration/test_awaiting_races.py).
def test_broker_and_connect_restarts_neo4j_down_and_a_rebalance(
    graph: Connections, kafka_source_factory: Callable[[str, str], KafkaSource], owned_stack: LocalStack
) -> None:
    source = _source(kafka_source_factory, graph)
    kafka = source.kafka
    first = sink_process(source, "--batch-rows", "1000")
    second: subprocess.Popen[bytes] | None = None
    try:
        with writes_going_on(source) as done:
            time.sleep(8)
            second = sink_process(source, "--batch-rows", "1000")  # a rebalance: the partitions are split
            time.sleep(8)
            kafka.stop_broker()
            time.sleep(5)
            kafka.start_broker()
            time.sleep(8)
            kafka.stop_connect()
            time.sleep(5)
            kafka.start_connect()
            time.sleep(8)
            owned_stack.neo4j.kill()
            time.sleep(30)
            owned_stack.neo4j.start()
            time.sleep(8)
            _stop(first)  # a rebalance: the second worker takes every partition
            time.sleep(8)
        assert done[0] > 100
        assert first.returncode is not None and second.poll() is None, "the second worker must still be running"
        _check(source, graph)
    finally:
        _stop(first)
        if second is not None:
            _stop(second)
