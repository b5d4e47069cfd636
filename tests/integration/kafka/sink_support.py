"""Helpers of the sink tests: a sink worker in a thread or a process, and waiting until `verify` is clean."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from kafka_support import KafkaSource
from neo4j import Driver

from oracle import NodeSpec, RelSpec, SchemaSpec, interval_sql
from pg2neo.apply.cypher import PENDING_COUNT
from pg2neo.apply.writer import GraphWriter
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.verify import verify
from pg2neo.runtime.connections import Connections
from pg2neo.transport.sink import Sink, SinkConfig

TEAM = "11111111-1111-1111-1111-111111111111"
OTHER_TEAM = "22222222-2222-2222-2222-222222222222"

SCHEMA = """
CREATE TABLE teams (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    budget numeric(14, 2),
    founded date,
    meta jsonb
);
CREATE TABLE people (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    team_id uuid REFERENCES teams (id),
    joined_at timestamptz,
    last_seen timestamp,
    shift interval,
    tags text[],
    scores int[],
    photo bytea,
    score double precision,
    active boolean,
    wake time
);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    neo4j_node_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    title text NOT NULL,
    body text,
    author_id bigint REFERENCES people (id)
);
ALTER TABLE documents REPLICA IDENTITY USING INDEX documents_neo4j_node_id_key;
CREATE TABLE comments (
    id bigint PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES documents (id),
    text text
);
CREATE TABLE memberships (
    person_id bigint NOT NULL REFERENCES people (id),
    team_id uuid NOT NULL REFERENCES teams (id),
    role text,
    weight numeric,
    PRIMARY KEY (person_id, team_id)
);
"""
MAPPING = """
version: 1
nodes:
  - table: teams
    label: Team
  - table: people
    label: Person
    relationships:
      - {type: MEMBER_OF, columns: team_id, to: teams}
  - table: documents
    label: Document
    key: neo4j_node_id
    key_property: uid
    relationships:
      - {type: WROTE, columns: author_id, to: people, direction: in}
  - table: comments
    label: Comment
    relationships:
      - {type: COMMENTS_ON, columns: document_id, to: documents}
relationships:
  - table: memberships
    type: BELONGS_TO
    from: {table: people, columns: person_id}
    to: {table: teams, columns: team_id}
"""

SPEC = SchemaSpec(
    nodes=(
        NodeSpec(
            "Team", ("id",), "SELECT id, name, budget, founded, meta::text AS meta FROM teams", frozenset({"meta"})
        ),
        NodeSpec(
            "Person",
            ("id",),
            "SELECT id, name, team_id, joined_at, last_seen, "  # noqa: S608 (a fixed column expression)
            + interval_sql("shift")
            + " AS shift, tags, scores, photo, score, active, wake FROM people",
            interval_props=frozenset({"shift"}),
        ),
        NodeSpec("Document", ("uid",), "SELECT neo4j_node_id AS uid, id, title, body, author_id FROM documents"),
        NodeSpec("Comment", ("id",), "SELECT id, document_id, text FROM comments"),
    ),
    rels=(
        RelSpec("MEMBER_OF", "Person", "Team", "SELECT id AS s0, team_id AS e0 FROM people WHERE team_id IS NOT NULL"),
        RelSpec(
            "WROTE",
            "Person",
            "Document",
            "SELECT author_id AS s0, neo4j_node_id AS e0 FROM documents WHERE author_id IS NOT NULL",
        ),
        RelSpec(
            "COMMENTS_ON",
            "Comment",
            "Document",
            "SELECT c.id AS s0, d.neo4j_node_id AS e0 FROM comments c JOIN documents d ON d.id = c.document_id",
        ),
        RelSpec("BELONGS_TO", "Person", "Team", "SELECT person_id AS s0, team_id AS e0, role, weight FROM memberships"),
    ),
)


def seed(source: KafkaSource) -> None:
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO teams (id, name, budget, founded, meta) VALUES "
            "(%s, 'Alpha', 1234.50, '2020-02-03', '{\"x\": [1, 2.50]}'), (%s, 'Beta', NULL, NULL, NULL)",
            (TEAM, OTHER_TEAM),
        )
        conn.execute(
            "INSERT INTO people SELECT g, 'person ' || g, CASE WHEN g %% 2 = 0 THEN %s::uuid END, "
            "'2024-01-02 03:04:05.123456+02', '2024-01-02 03:04:05.5', '1 year 2 mons 3 days 04:05:06.5', "
            "ARRAY['a', 'b'], ARRAY[g, 2], '\\xdeadbeef', g / 3.0, g %% 3 = 0, '12:34:56.789' "
            "FROM generate_series(1, 40) g",
            (TEAM,),
        )
        conn.execute(
            "INSERT INTO documents (title, body, author_id) SELECT 'doc ' || g, repeat(md5(g::text), 4000), g "
            "FROM generate_series(1, 10) g"
        )
        conn.execute("INSERT INTO comments SELECT g, 1 + g % 10, 'comment ' || g FROM generate_series(1, 15) g")
        conn.execute("INSERT INTO memberships SELECT g, %s, 'member', g / 7.0 FROM generate_series(1, 20) g", (TEAM,))


def pending_relationships(servers: Connections) -> int:
    with servers.driver() as driver:
        return int(driver.execute_query(PENDING_COUNT).records[0]["c"])


def mapping_of(source: KafkaSource) -> Mapping:
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        return load_mapping(source.mapping_file, conn)


def sink_config(source: KafkaSource, **extra: Any) -> SinkConfig:
    return SinkConfig(
        source.kafka.info().bootstrap_servers,
        f"g-{source.name}",
        source.names,
        dead_letter_topic=f"dlq-{source.name}",
        **extra,
    )


def prepare_graph(driver: Driver, mapping: Mapping) -> None:
    """An empty graph with the sink's schema (constraints and indexes): the Neo4j side only, no trigger."""
    with driver.session() as session:  # `IN TRANSACTIONS` needs an auto-commit transaction
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    GraphWriter(driver, mapping, awaiting=True, claim_epoch=False).ensure_schema()


def wait_in_sync(source: KafkaSource, driver: Driver, mapping: Mapping, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    report = None
    while time.monotonic() < deadline:
        report = verify(source.dsn, driver, mapping)
        if not report.drifts:
            return
        time.sleep(1.0)
    assert report is not None
    pytest.fail(
        f"the graph did not reach PostgreSQL's state: {[(d.scope, d.kind, d.identity) for d in report.drifts][:10]}"
    )


class SinkThread:
    """One worker in this process (for tests that look at its counts)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.stop = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sink.run(lambda: self.stop)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop = True
        self.thread.join(60)
        assert self.error is None, self.error


def sink_process(source: KafkaSource, *extra: str) -> subprocess.Popen[bytes]:
    """`pg2neo sink` as its own process (to be killed)."""
    args = ["--group", f"g-{source.name}", "--bootstrap-servers", source.kafka.info().bootstrap_servers]
    args += ["--name", source.name, "--dead-letter-topic", f"dlq-{source.name}", *extra]
    env = dict(source.env)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    # Each worker's log next to the mapping file (the test's tmp_path), for the failure's story.
    logs = sorted(source.mapping_file.parent.glob("sink-*.log"))
    with (source.mapping_file.parent / f"sink-{len(logs):02d}.log").open("wb") as log:  # the child keeps its copy
        return subprocess.Popen(
            [sys.executable, "-m", "pg2neo", "--mapping", str(source.mapping_file), "--log-json", "sink", "run", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def worker_logs(source: KafkaSource, lines: int = 30) -> str:
    """The last lines of each sink worker's log."""
    out = []
    for path in sorted(source.mapping_file.parent.glob("sink-*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"== {path.name}\n" + "\n".join(tail))
    return "\n".join(out)
