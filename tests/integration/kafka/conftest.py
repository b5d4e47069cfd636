"""Fixtures of the Kafka path's tests: the local Kafka (one KRaft broker and one Kafka Connect worker with the
Debezium plugin, started once per session) and a source database with its own connector name.

Place in the data flow: capture (WAL, by Debezium in Connect) -> transport (Kafka). Real servers only: the broker
and Connect come from Maven Central (cached like the Neo4j jars) and are started here; PostgreSQL and Neo4j are the
session's (tests/conftest.py). Without Java the Kafka tests are skipped; nothing else skips them.

Fixtures (helpers and types that test modules import are in kafka_support.py):
- `kafka` (session): the running `LocalKafka`.
- `kafka_source_factory`: `make(schema_sql, mapping_yaml) -> KafkaSource`, a fresh database of the session's
  PostgreSQL with that schema, a mapping file, and a connector name (also the database, slot and topic prefix);
  at the end the connector is deleted, its slot dropped and the database dropped.
- `source`: such a source with the small schema of kafka_support.py (`SMALL_SCHEMA`, `SMALL_MAPPING`).
- `consume`: `consume(topics, until, timeout) -> list[KafkaEvent]`: raw Debezium records read from the start of the
  topics by a fresh consumer group until `until(events)` holds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka_support import SMALL_MAPPING, SMALL_SCHEMA, KafkaEvent, KafkaSource, read_events
from psycopg import sql

from pg2neo.devstack.kafka import LocalKafka, java_available
from pg2neo.runtime.connections import Connections
from pg2neo.settings import DevSettings


@pytest.fixture(scope="session")
def kafka(servers: Connections) -> Iterator[LocalKafka]:
    """One broker and one Connect worker for the whole session (started once: ~20 s). It asks for `servers` so
    that it stops before the session's PostgreSQL, which its connectors read."""
    if not java_available():
        pytest.skip("no Java on this machine: the Kafka path needs Java 17 (`make deps` installs it)")
    root = Path(tempfile.mkdtemp(prefix="pg2neo-kafka-", dir="/tmp"))
    local = LocalKafka(root, DevSettings().cache_dir, partitions=3)
    try:
        local.up()
        yield local
    finally:
        local.down()
        shutil.rmtree(root, ignore_errors=True)


def _delete_connector(connect_url: str, name: str) -> None:
    request = urllib.request.Request(f"{connect_url}/connectors/{name}", method="DELETE")
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30):
        pass


def _drop_slot(admin: psycopg.Connection[Any], slot: str) -> None:
    """Drop the connector's slot once its walsender has gone (Connect stops the task asynchronously)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        admin.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (slot,),
        )
        try:
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            )
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.5)


@pytest.fixture
def kafka_source_factory(
    servers: Connections, kafka: LocalKafka, tmp_path: Path
) -> Iterator[Callable[[str, str], KafkaSource]]:
    made: list[KafkaSource] = []

    def make(schema_sql: str, mapping_yaml: str) -> KafkaSource:
        name = f"k{uuid.uuid4().hex[:10]}"
        with psycopg.connect(servers.pg_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = psycopg.conninfo.make_conninfo(servers.pg_dsn, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql)
        mapping_file = tmp_path / f"{name}.yaml"
        mapping_file.write_text(mapping_yaml)
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PG2NEO_")}
        env.update(
            PG2NEO_PG_DSN=dsn,
            PG2NEO_NEO4J__URI=servers.neo4j_uri,
            PG2NEO_NEO4J__PASSWORD=servers.neo4j_password,
            PG2NEO_DEV__STATE_DIR=str(tmp_path / "state"),
        )
        source = KafkaSource(dsn, name, mapping_file, kafka, servers, env)
        made.append(source)
        return source

    yield make
    for source in made:
        if kafka.running_pid("connect") is not None:
            _delete_connector(kafka.info().connect_url, source.name)
        with psycopg.connect(servers.pg_dsn, autocommit=True) as admin:
            _drop_slot(admin, source.names.slot)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(source.name)))


@pytest.fixture
def source(kafka_source_factory: Callable[[str, str], KafkaSource]) -> KafkaSource:
    return kafka_source_factory(SMALL_SCHEMA, SMALL_MAPPING)


@pytest.fixture
def consume(kafka: LocalKafka) -> Callable[..., list[KafkaEvent]]:
    def run(topics: list[str], until: Callable[[list[KafkaEvent]], bool], timeout: float = 90.0) -> list[KafkaEvent]:
        return read_events(kafka.info().bootstrap_servers, topics, until, timeout)

    return run
