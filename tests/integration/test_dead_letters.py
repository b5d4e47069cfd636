"""Dead letters: bad inputs either stored exactly or isolated in `pg2neo.dead_letters` with a clear reason, never
blocking the queue and never dropped silently; a Neo4j refusal (constraint) bisects the batch; `pg2neo dlq`.

Place in the data flow: apply stage (engine + writer) against real PostgreSQL and Neo4j, and the dlq commands.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver
from typer.testing import CliRunner

from faultproxy import assert_graph_exact
from pg2neo.apply.engine import Engine
from pg2neo.cli.main import app
from pg2neo.logs import redact
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service
from pg2neo.settings import ApplySettings
from syncing import drain

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE odd (
    id    integer PRIMARY KEY,
    label text,
    f     double precision,
    n     numeric,
    big   text,
    blob  bytea,
    doc   jsonb,
    arr   integer[],
    pt    point,
    box_  box,
    rng   int4range,
    cash  money,
    span  interval,
    ts    timestamptz
);
CREATE TABLE person (id integer PRIMARY KEY, email text NOT NULL);
"""

MAPPING = """
nodes:
  - table: odd
    label: Odd
  - table: person
    label: Person
"""

INJECTION = "'}) DETACH DELETE n //"
HUGE = 20_000_000

OddDb = tuple[psycopg.Connection[Any], Driver, Mapping]


@pytest.fixture
def odd_db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[OddDb]:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        yield conn, driver, mapping


def dead_letters(conn: psycopg.Connection[Any]) -> dict[tuple[str, int], tuple[str, str, int]]:
    rows = conn.execute("SELECT tbl, key[1], error_class, message, attempts FROM pg2neo.dead_letters").fetchall()
    return {(r[0], int(r[1])): (r[2], r[3], r[4]) for r in rows}


def test_bad_inputs_are_stored_exactly_or_dead_lettered(odd_db: OddDb, pg_dsn: str) -> None:
    conn, driver, mapping = odd_db
    nested = "1"
    for _ in range(200):
        nested = '{"a": ' + nested + "}"
    insert = [
        ("INSERT INTO odd (id, f) VALUES (1, 'NaN')", ()),
        ("INSERT INTO odd (id, f) VALUES (2, '-Infinity')", ()),
        ("INSERT INTO odd (id, n) VALUES (3, 'NaN')", ()),
        ("INSERT INTO odd (id, big) VALUES (4, repeat('x', %s))", (HUGE,)),
        ("INSERT INTO odd (id, blob) VALUES (5, convert_to(repeat('y', %s), 'UTF8'))", (HUGE,)),
        ("INSERT INTO odd (id, doc) VALUES (6, %s::jsonb)", (nested,)),
        ("INSERT INTO odd (id, arr) VALUES (7, ARRAY[1, NULL, 3])", ()),
        ("INSERT INTO odd (id, pt, box_) VALUES (8, point(1.5, -2), box(point(0,0), point(1,1)))", ()),
        ("INSERT INTO odd (id, rng, cash) VALUES (9, int4range(1, 10), 12.34::money)", ()),
        ("INSERT INTO odd (id, span) VALUES (10, interval '1 year 2 months 3 days 04:05:06.5')", ()),
        ("INSERT INTO odd (id, label) VALUES (11, %s)", (INJECTION,)),
        ("INSERT INTO odd (id, label) VALUES (12, 'back`quote` ``x')", ()),
        ("INSERT INTO odd (id, ts) VALUES (13, 'infinity')", ()),
        ("INSERT INTO odd (id, ts) VALUES (14, '-infinity')", ()),
        ("INSERT INTO odd (id, label) VALUES (15, 'plain')", ()),
    ]
    for statement, params in insert:
        conn.execute(statement, params)
    drain(pg_dsn, driver, mapping)

    assert conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone() == (0,)
    letters = dead_letters(conn)
    assert set(letters) == {("public.odd", 7), ("public.odd", 13), ("public.odd", 14)}
    assert "NULL" in letters[("public.odd", 7)][1] and "arr" in letters[("public.odd", 7)][1]
    assert "infinity" in letters[("public.odd", 13)][1] and "ts" in letters[("public.odd", 13)][1]
    assert all(cls == "UnstorableValue" for cls, _, _ in letters.values())

    with driver.session() as session:
        nodes = {r["id"]: dict(r["n"]) for r in session.run("MATCH (n:Odd) RETURN n.id AS id, n")}
    assert set(nodes) == {1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 15}
    assert math.isnan(nodes[1]["f"]) and nodes[2]["f"] == -math.inf and math.isnan(nodes[3]["n"])
    assert len(nodes[4]["big"]) == HUGE and nodes[5]["blob"] == b"y" * HUGE
    doc = json.loads(nodes[6]["doc"])
    for _ in range(200):
        doc = doc["a"]
    assert doc == 1
    assert nodes[8]["pt"] == "(1.5,-2)" and nodes[8]["box_"] == "(1,1),(0,0)"
    assert nodes[9]["rng"] == "[1,10)" and nodes[9]["cash"] == "$12.34"
    assert (nodes[10]["span"].months, nodes[10]["span"].days) == (14, 3)
    assert nodes[11]["label"] == INJECTION and nodes[12]["label"] == "back`quote` ``x"
    assert nodes[15]["label"] == "plain"

    # The rows are fixed in PostgreSQL: the re-queued keys apply and their dead letters go; the graph is exact.
    conn.execute("UPDATE odd SET arr = ARRAY[1, 3] WHERE id = 7")
    conn.execute("UPDATE odd SET ts = '2024-01-01T00:00:00Z' WHERE id IN (13, 14)")
    drain(pg_dsn, driver, mapping)
    assert dead_letters(conn) == {}
    assert_graph_exact(conn, driver, mapping)


def test_neo4j_refusal_is_isolated_by_bisection_and_dlq_commands(
    odd_db: OddDb, pg_dsn: str, graph: Connections, monkeypatch: Any
) -> None:
    conn, driver, mapping = odd_db
    with driver.session() as session:  # a rule Neo4j enforces and PostgreSQL does not: unique emails
        session.run("CREATE CONSTRAINT person_email IF NOT EXISTS FOR (p:Person) REQUIRE p.email IS UNIQUE").consume()
    conn.execute("INSERT INTO person SELECT i, 'p' || i || '@x' FROM generate_series(1, 60) i")
    conn.execute("UPDATE person SET email = 'p10@x' WHERE id = 40")
    audit_before = conn.execute("SELECT count(*) FROM pg2neo.audit").fetchone()
    drain(pg_dsn, driver, mapping)

    assert conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone() == (0,)
    letters = dead_letters(conn)
    assert list(letters) == [("public.person", 40)]
    error_class, message, attempts = letters[("public.person", 40)]
    assert error_class == "ConstraintError" and "email" in message and attempts == 1
    payload = conn.execute("SELECT payload FROM pg2neo.dead_letters").fetchone()
    assert payload is not None and payload[0]["email"] == "p10@x"
    with driver.session() as session:
        ids = {r["id"] for r in session.run("MATCH (p:Person) RETURN p.id AS id")}
    assert ids == set(range(1, 61)) - {40}  # the rest of the batch landed
    audit = conn.execute(
        "SELECT events, counts, attempts, outcome, duration_ms FROM pg2neo.audit ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert audit_before is not None and audit is not None
    assert audit[0] == 61 and audit[1]["Person:upsert"] == 59 and audit[1]["dead_letters"] == 1
    assert audit[2] == 1 and audit[3] == "applied_with_dead_letters" and audit[4] > 0

    monkeypatch.setenv("PG2NEO_PG_DSN", pg_dsn)
    monkeypatch.setenv("PG2NEO_NEO4J__URI", graph.neo4j_uri)
    monkeypatch.setenv("PG2NEO_NEO4J__PASSWORD", graph.neo4j_password)
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.output)
    assert entry["tbl"] == "public.person" and entry["key"] == ["40"]
    shown = runner.invoke(app, ["dlq", "show", str(entry["id"])])
    assert shown.exit_code == 0 and '"p10@x"' in shown.output
    assert runner.invoke(app, ["dlq", "retry"]).exit_code != 0  # neither ids nor --all

    # Retried unchanged: it fails again and comes back with attempts + 1; nothing else moves.
    retried = runner.invoke(app, ["dlq", "retry", str(entry["id"])])
    assert retried.exit_code == 0 and "1 key" in retried.output
    drain(pg_dsn, driver, mapping)
    assert dead_letters(conn)[("public.person", 40)][2] == 2

    # A retry after a newer write re-reads the current row (never the stale payload) and clears the letter.
    conn.execute("UPDATE person SET email = 'forty@x' WHERE id = 40")
    conn.execute("DELETE FROM pg2neo.changes")  # as if those events were long applied: only the retry re-queues 40
    assert runner.invoke(app, ["dlq", "retry", "--all"]).exit_code == 0
    drain(pg_dsn, driver, mapping)
    assert dead_letters(conn) == {}
    assert_graph_exact(conn, driver, mapping)
    with driver.session() as session:
        record = session.run("MATCH (p:Person {id: 40}) RETURN p.email AS e").single()
    assert record is not None and record["e"] == "forty@x"

    # drop: forgets a letter without touching PostgreSQL or Neo4j.
    conn.execute("UPDATE person SET email = 'p11@x' WHERE id = 41")
    drain(pg_dsn, driver, mapping)
    assert list(dead_letters(conn)) == [("public.person", 41)]
    dropped = runner.invoke(app, ["dlq", "drop", "--all"])
    assert dropped.exit_code == 0 and "1 dead letter" in dropped.output
    assert dead_letters(conn) == {}


def test_audit_rows_and_retention(odd_db: OddDb, pg_dsn: str) -> None:
    conn, driver, mapping = odd_db
    conn.execute(
        "INSERT INTO pg2neo.audit (kind, started_at, finished_at, events, counts, duration_ms, outcome) "
        "VALUES ('changes', now() - interval '40 days', now() - interval '40 days', 1, '{}', 1, 'applied')"
    )
    conn.execute("INSERT INTO person SELECT i, 'a' || i FROM generate_series(1, 5) i")
    conn.execute("DELETE FROM person WHERE id = 5")
    engine = Engine(pg_dsn, driver, mapping, ApplySettings())
    try:
        run_service(engine, Stopper(), 0.05, until_empty=True, audit_retention_days=30)
    finally:
        engine.close()
    rows = conn.execute(
        "SELECT kind, first_seq, last_seq, events, counts, attempts, outcome, duration_ms FROM pg2neo.audit"
    ).fetchall()
    assert len(rows) == 1  # the 40-day-old row is gone, the new one stays
    kind, first_seq, last_seq, events, counts, attempts, outcome, duration_ms = rows[0]
    assert (kind, events, attempts, outcome) == ("changes", 6, 1, "applied")
    assert last_seq - first_seq == 5 and duration_ms > 0
    assert (counts.pop("queue_depth"), counts.pop("lag_seconds")) == (0, 0)  # the queue it left: drained
    assert counts == {"Person:upsert": 4, "Person:delete": 1}


def test_logged_errors_never_show_passwords() -> None:
    assert redact("connection failed: host=db password=hunter2 user=x") == (
        "connection failed: host=db password=*** user=x"
    )
    assert redact("postgresql://app:hunter2@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert "hunter2" not in redact("password='hunter2 two' dbname=x")
