"""`pg2neo status` and `pg2neo dlq list --kafka` in Kafka mode: the real commands (new processes with the settings in
their environment) against a sink group that has dead letters and a relationship waiting for its end node.

Place in the data flow: transport (Kafka, the sink's dead-letter topic) and apply (the sink's checkpoints and
waiting relationships in Neo4j), seen from the CLI. Real servers only: the session's PostgreSQL and Neo4j, the
local broker and Connect of conftest.py, a sink worker in this process.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from kafka_support import SMALL_MAPPING, SMALL_SCHEMA, KafkaSource
from sink_support import SinkThread, mapping_of, pending_relationships, prepare_graph, sink_config

from pg2neo.devstack.process import free_port
from pg2neo.runtime.connections import Connections
from pg2neo.transport.sink import Sink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TEAM = "11111111-1111-1111-1111-111111111111"
NO_SUCH_TEAM = "99999999-9999-9999-9999-999999999999"


def words(text: str) -> str:
    """The output with its line breaks and runs of spaces as single spaces (rich wraps at 80 columns)."""
    return " ".join(text.split())


def test_status_and_dlq_list_show_the_sinks_dead_letters_and_waiting_relationships(
    graph: Connections, kafka_source_factory: Callable[[str, str], KafkaSource]
) -> None:
    from confluent_kafka import Producer

    source = kafka_source_factory(SMALL_SCHEMA, SMALL_MAPPING)
    source.execute("ALTER TABLE people REPLICA IDENTITY USING INDEX people_neo4j_node_id_key")  # deletes carry the key
    source.execute("INSERT INTO teams (id, name) VALUES (%s, 'Alpha')", (TEAM,))
    source.execute("INSERT INTO people (id, name, team_id) VALUES (1, 'one', %s), (2, 'two', NULL)", (TEAM,))
    mapping = mapping_of(source)
    servers = source.kafka.info().bootstrap_servers
    group, dead_letter_topic = f"g-{source.name}", f"dlq-{source.name}"
    kafka_args = ("--bootstrap-servers", servers, "--dead-letter-topic", dead_letter_topic)
    with graph.driver() as driver:
        prepare_graph(driver, mapping)
        # Neither mode yet: no trigger-mode install in this database, no sink checkpoint in Neo4j.
        neither = source.pg2neo("status")
        assert neither.returncode == 2, neither.stdout + neither.stderr
        assert "neither mode" in neither.stderr and "pg2neo init" in neither.stderr
        assert "pg2neo sink run" in words(neither.stderr)

        source.register()
        producer = Producer({"bootstrap.servers": servers})
        topic = source.topic("people")
        producer.produce(topic, key=b'{"neo4j_node_id": "x"}', value=b"{not json")
        producer.produce(topic, key=b'{"neo4j_node_id": "y"}', value=b'{"op": "x", "source": {"lsn": 1}}')
        # A person whose team exists nowhere: its MEMBER_OF waits for the end node, as a pending relationship.
        ghost = {"id": 9001, "neo4j_node_id": str(uuid.uuid4()), "name": "ghost", "team_id": NO_SUCH_TEAM}
        event = {"op": "c", "source": {"lsn": 1, "ts_ms": int(time.time() * 1000)}, "after": ghost}
        producer.produce(topic, key=json.dumps({"neo4j_node_id": ghost["neo4j_node_id"]}), value=json.dumps(event))
        producer.flush(10)
        del producer
        worker = SinkThread(Sink(sink_config(source), driver, mapping))
        try:
            people = "MATCH (p:Person) RETURN count(p) AS c"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (
                worker.sink.counts.dead_letters < 2
                or pending_relationships(graph) < 1
                or driver.execute_query(people).records[0]["c"] < 3
            ):
                time.sleep(0.5)
            assert worker.sink.counts.dead_letters == 2
            assert pending_relationships(graph) == 1
            assert driver.execute_query(people).records[0]["c"] == 3

            done = source.pg2neo("status", "--json", *kafka_args)
            assert done.returncode == 0, done.stdout + done.stderr
            shown = json.loads(done.stdout)
            assert shown["modes"] == ["kafka"] and "queue_depth" not in shown  # no trigger-mode install here
            sink = shown["kafka_sink"]
            assert sink["kafka_error"] is None and sink["dead_letter_topic"] == dead_letter_topic
            [figures] = [g for g in sink["groups"] if g["group"] == group]
            assert figures["workers"] == 1 and figures["lag"] == 0
            assert figures["dead_letters"] == 2 and figures["pending_relationships"] == 1
            assert figures["end_to_end_seconds"] is not None
            assert topic in {p["topic"] for p in figures["partitions"]}
            assert "pg2neo dlq list --kafka" in figures["dead_letters_command"]
            assert dead_letter_topic in figures["dead_letters_command"]

            text = source.pg2neo("status", *kafka_args)
            assert text.returncode == 0, text.stdout + text.stderr
            said = words(text.stdout)
            assert "Kafka sink" in said and f"group {group}" in said and "1 worker(s)" in said
            assert "not installed" in said and "run `pg2neo init`" not in said + text.stderr
        finally:
            worker.close()

    listed = source.pg2neo("dlq", "list", "--kafka", *kafka_args)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    said = words(listed.stdout)
    assert "not a JSON document" in said and "unknown operation" in said
    assert f"2 dead letter(s) on Kafka topic {dead_letter_topic}" in said
    headings = [line for line in listed.stdout.splitlines() if line.startswith("#")]
    assert len(headings) == 2 and all(topic in line for line in headings), listed.stdout
    as_json = source.pg2neo("dlq", "list", "--json", *kafka_args)  # the Kafka options alone mean --kafka
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    letters = json.loads(as_json.stdout)
    reasons = " ".join(str(d["reason"]) for d in letters)
    assert "not a JSON document" in reasons and "unknown operation" in reasons
    assert len(letters) == 2 and {d["topic"] for d in letters} == {topic}
    assert all(d["offset"] is not None and d["id"] for d in letters)

    # No brokers given and no local Kafka: what Neo4j knows, and how to get the rest.
    alone = source.pg2neo("status", "--json")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    sink = json.loads(alone.stdout)["kafka_sink"]
    assert "--bootstrap-servers" in sink["kafka_error"]
    [figures] = [g for g in sink["groups"] if g["group"] == group]
    assert figures["workers"] is None and figures["dead_letters"] is None and figures["lag"] is None
    assert figures["pending_relationships"] == 1 and figures["end_to_end_seconds"] is not None
    assert any(p["topic"] == topic and p["applied"] > 0 for p in figures["partitions"])

    # Brokers that do not answer: one clean line that says so, exit 2; status still prints what Neo4j knows.
    nowhere = f"127.0.0.1:{free_port()}"
    away = source.pg2neo("status", "--bootstrap-servers", nowhere)
    assert away.returncode == 2, away.stdout + away.stderr
    assert f"cannot reach Kafka at {nowhere}" in words(away.stderr) and "Traceback" not in away.stderr
    assert f"group {group}" in words(away.stdout)
    no_list = source.pg2neo("dlq", "list", "--kafka", "--bootstrap-servers", nowhere)
    assert no_list.returncode == 2 and "Traceback" not in no_list.stderr
    assert f"cannot reach Kafka at {nowhere}" in words(no_list.stderr) and "--bootstrap-servers" in no_list.stderr

    # Trigger mode's list on a Kafka-mode database points at the sink's dead letters.
    trigger = source.pg2neo("dlq", "list")
    assert trigger.returncode == 2
    assert "pg2neo dlq list --kafka" in words(trigger.stderr) and group in trigger.stderr
