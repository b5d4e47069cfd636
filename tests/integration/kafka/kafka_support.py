"""Helpers of the Kafka path's tests, importable by test modules (fixtures are in conftest.py): the small test
schema and mapping, a source database with its connector (`KafkaSource`), and a reader of raw Debezium records
(`read_events`, `KafkaEvent`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pg2neo.devstack.kafka import LocalKafka
from pg2neo.runtime.connections import Connections
from pg2neo.transport.debezium import ConnectorNames, topic_of

SMALL_SCHEMA = """
CREATE TABLE teams (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    budget numeric(14, 2),
    founded date,
    created timestamptz,
    seen timestamp,
    shift interval,
    wake time,
    photo bytea,
    body text,
    tags text[],
    meta jsonb,
    secret text
);
CREATE TABLE people (
    id bigint PRIMARY KEY,
    neo4j_node_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    name text NOT NULL,
    team_id uuid REFERENCES teams (id)
);
CREATE TABLE memberships (
    person_id bigint NOT NULL REFERENCES people (id),
    team_id uuid NOT NULL REFERENCES teams (id),
    role text,
    PRIMARY KEY (person_id, team_id)
);
"""
SMALL_MAPPING = """
version: 1
nodes:
  - table: teams
    label: Team
    properties: {exclude: [secret]}
  - table: people
    label: Person
    key: neo4j_node_id
    key_property: uid
    relationships:
      - {type: MEMBER_OF, columns: team_id, to: teams}
relationships:
  - table: memberships
    type: BELONGS_TO
    from: {table: people, columns: person_id}
    to: {table: teams, columns: team_id}
"""


@dataclass
class KafkaSource:
    """A source database for one test and the connector name that goes with it."""

    dsn: str
    name: str  # the connector's name; also the database's, the slot's and the topics' prefix
    mapping_file: Path
    kafka: LocalKafka
    servers: Connections
    env: dict[str, str] = field(default_factory=dict)  # PG2NEO_* for a `pg2neo` subprocess on this source

    @property
    def names(self) -> ConnectorNames:
        return ConnectorNames(self.name)

    def topic(self, table: str) -> str:
        """`topic("people")` or `topic("public.people")`."""
        return topic_of(self.names, table if "." in table else f"public.{table}")

    def execute(self, statement: str, params: Any = None) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement, params)

    def pg2neo(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the `pg2neo` command on this source (a new process, the settings in its environment)."""
        return subprocess.run(
            [sys.executable, "-m", "pg2neo", "--mapping", str(self.mapping_file), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def register(self, *extra: str) -> None:
        """`pg2neo kafka register` with the local Connect; waits until the connector runs."""
        done = self.pg2neo(
            "kafka", "register", "--connect-url", self.kafka.info().connect_url, "--name", self.name, *extra
        )
        assert done.returncode == 0, done.stdout + done.stderr


@dataclass(frozen=True)
class KafkaEvent:
    """One record as Debezium wrote it: JSON key and value decoded (value None for a tombstone)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any

    @property
    def op(self) -> str | None:
        return None if self.value is None else self.value.get("op")


def read_events(
    bootstrap_servers: str,
    topics: list[str],
    until: Callable[[list[KafkaEvent]], bool],
    timeout: float = 90.0,
) -> list[KafkaEvent]:
    """Read `topics` from their start with a new consumer group until `until(events)` holds; fails on timeout."""
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 1000,
            "log_level": 0,
        }
    )
    events: list[KafkaEvent] = []
    try:
        consumer.subscribe(topics)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until(events):
                return events
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                # a topic Debezium has not created yet, a broker being restarted: keep polling
                if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF) or error.retriable():
                    continue
                if not error.fatal():
                    continue
                raise AssertionError(f"consumer failed: {error}")
            raw_key, raw_value = message.key(), message.value()
            events.append(
                KafkaEvent(
                    str(message.topic()),
                    int(message.partition() or 0),
                    int(message.offset() or 0),
                    None if raw_key is None else json.loads(raw_key),
                    None if raw_value is None else json.loads(raw_value),
                )
            )
        if until(events):
            return events
        seen = [(e.topic, e.op, e.key) for e in events][-20:]
        raise AssertionError(f"the expected events did not arrive within {timeout:.0f}s; last seen: {seen}")
    finally:
        consumer.close()


def committed_offset(connect_url: str, name: str) -> dict[str, Any] | None:
    """The source offset Connect has committed for connector `name` (`GET /connectors/<name>/offsets`), or None."""
    with urllib.request.urlopen(f"{connect_url}/connectors/{name}/offsets", timeout=10) as response:
        offsets = json.loads(response.read()).get("offsets") or []
    return dict(offsets[0]["offset"]) if offsets else None


def wait_snapshot_committed(connect_url: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until Connect has committed an offset past the end of Debezium's snapshot: a restart of the connector
    (or of Connect, or of the broker) from then on streams from the slot instead of taking the snapshot again."""
    deadline = time.monotonic() + timeout
    offset = None
    while time.monotonic() < deadline:
        offset = committed_offset(connect_url, name)
        if offset is not None and (offset.get("last_snapshot_record") or "snapshot" not in offset):
            return offset
        time.sleep(0.5)
    raise AssertionError(f"connector {name}: no committed offset after its snapshot within {timeout:.0f}s: {offset}")
