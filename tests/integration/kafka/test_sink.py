"""The scale-out path end to end: PostgreSQL -> Debezium (in Kafka Connect) -> Kafka -> pg2neo sink -> Neo4j.

Place in the data flow: capture (WAL) -> transport (Kafka) -> apply. Real servers only (the session's PostgreSQL and
Neo4j, the local broker and Connect of conftest.py). Checks: after the Debezium snapshot and after live writes the
graph equals the mapping of the current rows (`verify`: 0 drift, and the hand-written oracle); a TOASTed column
untouched by an update keeps its value; a foreign key to a node keyed by another column (`neo4j_node_id`) and
relationships whose end arrives later end right; TRUNCATE; bad events are dead-lettered with their reason while the
rest lands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from kafka_support import KafkaSource
from sink_support import (
    MAPPING,
    OTHER_TEAM,
    SCHEMA,
    SPEC,
    TEAM,
    SinkThread,
    mapping_of,
    pending_relationships,
    prepare_graph,
    seed,
    sink_config,
    wait_in_sync,
)

from oracle import assert_graph_matches
from pg2neo.runtime.connections import Connections
from pg2neo.transport.sink import Sink
from pg2neo.transport.sink_status import dead_letters

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def live_writes(source: KafkaSource) -> None:
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute("UPDATE people SET name = name || '!', team_id = %s WHERE id <= 5", (OTHER_TEAM,))
        conn.execute("UPDATE documents SET title = 'renamed' WHERE id = 3")  # body untouched: TOAST placeholder
        conn.execute("DELETE FROM memberships WHERE person_id IN (1, 2)")
        conn.execute("UPDATE memberships SET weight = 42, role = 'lead' WHERE person_id = 3")
        conn.execute("DELETE FROM comments WHERE document_id = 4")
        conn.execute("DELETE FROM documents WHERE id = 4")
        conn.execute("UPDATE comments SET document_id = 5 WHERE id = 1")  # a foreign key to a neo4j_node_id node
        with conn.transaction():  # ends created in the same transaction as the relationships to them
            conn.execute("INSERT INTO teams (id, name) VALUES ('33333333-3333-3333-3333-333333333333', 'Gamma')")
            conn.execute("INSERT INTO people (id, name) VALUES (100, 'new')")
            conn.execute("INSERT INTO memberships VALUES (100, '33333333-3333-3333-3333-333333333333', 'new', 1)")
            conn.execute("UPDATE people SET name = 'twice' WHERE id = 100")
            conn.execute("INSERT INTO documents (id, title, author_id) VALUES (500, 'fresh', 100)")
            conn.execute("INSERT INTO comments VALUES (500, 500, 'on fresh')")
        conn.execute("UPDATE people SET id = 200 WHERE id = 39")  # a key change: delete + create
        conn.execute("UPDATE documents SET neo4j_node_id = gen_random_uuid() WHERE id = 6")  # a node key change
        conn.execute("DELETE FROM people WHERE id = 40")
        with conn.transaction():  # a person and its memberships go in one transaction
            conn.execute("DELETE FROM memberships WHERE person_id = 19")
            conn.execute("UPDATE documents SET author_id = NULL WHERE author_id = 19")
            conn.execute("DELETE FROM people WHERE id = 19")


def test_snapshot_then_live_writes_give_the_mapped_graph(
    graph: Connections, kafka_source_factory: Callable[[str, str], KafkaSource]
) -> None:
    source = kafka_source_factory(SCHEMA, MAPPING)
    seed(source)
    mapping = mapping_of(source)
    with graph.driver() as driver:
        prepare_graph(driver, mapping)
        source.register()
        worker = SinkThread(Sink(sink_config(source), driver, mapping))
        try:
            wait_in_sync(source, driver, mapping)
            with psycopg.connect(source.dsn) as conn:
                assert_graph_matches(conn, driver, SPEC)
            live_writes(source)
            wait_in_sync(source, driver, mapping)
            with psycopg.connect(source.dsn) as conn:
                assert_graph_matches(conn, driver, SPEC)
                body = conn.execute("SELECT body FROM documents WHERE id = 3").fetchone()
            record = driver.execute_query("MATCH (d:Document {id: 3}) RETURN d.title AS t, d.body AS b").records[0]
            assert record["t"] == "renamed" and body is not None and record["b"] == body[0]
            source.execute("TRUNCATE memberships")
            source.execute("INSERT INTO memberships VALUES (7, %s, 'after truncate', 3)", (TEAM,))
            wait_in_sync(source, driver, mapping)
            with psycopg.connect(source.dsn) as conn:
                assert_graph_matches(conn, driver, SPEC)
            status = source.pg2neo(
                "sink",
                "status",
                "--json",
                "--group",
                f"g-{source.name}",
                "--dead-letter-topic",
                f"dlq-{source.name}",
                "--bootstrap-servers",
                source.kafka.info().bootstrap_servers,
            )
            assert status.returncode == 0, status.stdout + status.stderr
            figures = json.loads(status.stdout)
            assert figures["workers"] == 1 and figures["lag"] == 0 and figures["dead_letters"] == 0
            assert {p["topic"] for p in figures["partitions"]} >= {source.topic("people"), source.topic("memberships")}
            assert figures["pending_relationships"] == 0 and figures["end_to_end_seconds"] is not None
        finally:
            worker.close()
        assert worker.sink.counts.dead_letters == 0
        assert pending_relationships(graph) == 0


def test_bad_events_are_dead_lettered_and_the_rest_lands(
    graph: Connections, kafka_source_factory: Callable[[str, str], KafkaSource]
) -> None:
    from confluent_kafka import Producer

    source = kafka_source_factory(SCHEMA, MAPPING)
    seed(source)
    mapping = mapping_of(source)
    servers = source.kafka.info().bootstrap_servers
    with graph.driver() as driver:
        prepare_graph(driver, mapping)
        source.register()
        producer = Producer({"bootstrap.servers": servers})
        topic = source.topic("people")
        producer.produce(topic, key=b'{"id": 999}', value=b"{not json")
        producer.produce(topic, key=b'{"id": 998}', value=b'{"op": "c", "source": {"lsn": 1}, "after": {"id": 998}}')
        producer.produce(topic, key=b'{"id": 997}', value=b'{"op": "x", "source": {"lsn": 1}}')
        producer.produce(topic, key=b'{"id": 996}', value=b'{"after": {}}')
        producer.flush(10)
        del producer
        worker = SinkThread(Sink(sink_config(source), driver, mapping))
        try:
            wait_in_sync(source, driver, mapping)
            # A value Neo4j cannot hold (an array with a NULL), among good rows of the same batch.
            with psycopg.connect(source.dsn, autocommit=True) as conn, conn.transaction():
                conn.execute("INSERT INTO people (id, name, tags) VALUES (501, 'bad tags', ARRAY['a', NULL])")
                conn.execute("INSERT INTO people (id, name) VALUES (502, 'fine')")
            # A schema change of a mapped table: a mapped column dropped (its events lack it).
            source.execute("ALTER TABLE comments DROP COLUMN text")
            source.execute("INSERT INTO comments (id, document_id) VALUES (900, 1)")
            source.execute("INSERT INTO people (id, name) VALUES (503, 'after the bad events')")
            count = "MATCH (p:Person) WHERE p.id IN [502, 503] RETURN count(p) AS c"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (
                worker.sink.counts.dead_letters < 6 or driver.execute_query(count).records[0]["c"] < 2
            ):
                time.sleep(0.5)
            assert driver.execute_query(count).records[0]["c"] == 2  # the good rows around the bad ones landed
            assert worker.sink.counts.dead_letters == 6
        finally:
            worker.close()
    letters: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(letters) < 6 and time.monotonic() < deadline:
        letters = dead_letters(servers, f"dlq-{source.name}")
    reasons = sorted(str(item["reason"]) for item in letters)
    assert len(reasons) == 6, reasons
    joined = "\n".join(reasons)
    assert "not a JSON document" in joined
    assert "missing from the event" in joined  # the hand-made event, and the comment after the DROP COLUMN
    assert sum("missing from the event" in r for r in reasons) == 2
    assert "unknown operation" in joined
    assert "not a Debezium change event" in joined
    assert "tags" in joined and "null" in joined.lower()  # the array Neo4j cannot hold names its column
