"""The local stack runs the real servers: durable Neo4j with APOC, PostgreSQL with 2PC and logical decoding."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from neo4j.exceptions import ServiceUnavailable

from pg2neo.devstack.neo4j import APOC_VERSION, NEO4J_VERSION
from pg2neo.devstack.stack import LocalStack
from pg2neo.runtime.connections import Connections


def test_neo4j_is_the_expected_version_with_apoc(graph: Connections) -> None:
    with graph.driver() as driver:
        components = driver.execute_query("CALL dbms.components() YIELD name, versions, edition RETURN *").records
        assert components[0]["versions"] == [NEO4J_VERSION]
        assert components[0]["edition"] == "community"
        assert driver.execute_query("RETURN apoc.version() AS v").records[0]["v"] == APOC_VERSION
        result = driver.execute_query(
            "CALL apoc.periodic.iterate('UNWIND range(1, 2500) AS i RETURN i', 'CREATE (:ApocProbe {i: i})', "
            "{batchSize: 1000}) YIELD batches, total, errorMessages RETURN batches, total, errorMessages"
        ).records[0]
        assert (result["batches"], result["total"], result["errorMessages"]) == (3, 2500, {})
        count = driver.execute_query("MATCH (n:ApocProbe) RETURN count(n) AS c").records[0]["c"]
        assert count == 2500


def test_neo4j_requires_auth(graph: Connections) -> None:
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError

    with (
        GraphDatabase.driver(graph.neo4j_uri, auth=("neo4j", "wrong-password")) as driver,
        pytest.raises(AuthError),
    ):
        driver.verify_connectivity()


def test_node_survives_sigkill_and_restart(owned_stack: LocalStack, graph: Connections) -> None:
    marker = str(uuid.uuid4())
    with graph.driver() as driver:
        driver.execute_query("CREATE (:Durable {marker: $m})", m=marker)
    owned_stack.neo4j.kill()
    with graph.driver() as driver, pytest.raises(ServiceUnavailable):
        driver.verify_connectivity()
    owned_stack.neo4j.start()
    with graph.driver() as driver:
        rows = driver.execute_query("MATCH (n:Durable {marker: $m}) RETURN count(n) AS c", m=marker).records
    assert rows[0]["c"] == 1


def test_postgres_two_phase_commit(pg_dsn: str) -> None:
    gid = f"pg2neo-test-{uuid.uuid4()}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute(psycopg.sql.SQL("PREPARE TRANSACTION {}").format(psycopg.sql.Literal(gid)))
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone()
        assert prepared == (1,)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        conn.execute(psycopg.sql.SQL("COMMIT PREPARED {}").format(psycopg.sql.Literal(gid)))
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_postgres_logical_replication_slot(pg_dsn: str) -> None:
    slot = f"s_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            conn.execute("INSERT INTO t VALUES (1, 'héllo')")
            changes = conn.execute(
                "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, "
                "'proto_version', '1', 'publication_names', 'p')",
                (slot,),
            ).fetchall()
            # pgoutput messages: B(egin), R(elation), I(nsert), C(ommit)
            kinds = [bytes(row[0])[:1] for row in changes]
            assert kinds == [b"B", b"R", b"I", b"C"]
            assert "héllo".encode() in bytes(changes[2][0])
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
