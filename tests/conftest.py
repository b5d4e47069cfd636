"""Shared fixtures: real servers for integration tests.

A running stack is reused when `PG2NEO_TEST_PG_DSN`, `PG2NEO_TEST_NEO4J_URI` and `PG2NEO_TEST_NEO4J_PASSWORD`
are set; otherwise the session starts its own local stack in a temporary state folder and stops it at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pg2neo.devstack.stack import LocalStack
from pg2neo.runtime.connections import Connections
from pg2neo.settings import DevSettings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack | None]:
    """The stack this session started (None when the servers were given from outside)."""
    if os.environ.get("PG2NEO_TEST_PG_DSN") and os.environ.get("PG2NEO_TEST_NEO4J_URI"):
        yield None
        return
    state = Path(tempfile.mkdtemp(prefix="pg2neo-test-", dir="/tmp"))
    state.chmod(0o755)
    stack = LocalStack(DevSettings(state_dir=state, neo4j_heap="1g", neo4j_pagecache="512m"))
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(local_stack: LocalStack | None) -> Connections:
    if local_stack is None:
        return Connections(
            pg_dsn=os.environ["PG2NEO_TEST_PG_DSN"],
            neo4j_uri=os.environ["PG2NEO_TEST_NEO4J_URI"],
            neo4j_user=os.environ.get("PG2NEO_TEST_NEO4J_USER", "neo4j"),
            neo4j_password=os.environ.get("PG2NEO_TEST_NEO4J_PASSWORD", ""),
        )
    info = local_stack.info()
    return Connections(info.pg_dsn, info.neo4j_uri, info.neo4j_user, info.neo4j_password)


@pytest.fixture
def owned_stack(local_stack: LocalStack | None) -> LocalStack:
    """For tests that kill and restart the servers: only a stack this session owns may be killed."""
    if local_stack is None:
        pytest.skip("servers were given from outside; fault tests need a stack the session started")
    return local_stack


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture
def pg_dsn(servers: Connections) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(servers.pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_dbname(servers.pg_dsn, name)
    with psycopg.connect(servers.pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def wipe_graph(conn: Connections) -> None:
    with conn.driver() as driver, driver.session() as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
        for record in list(session.run("SHOW CONSTRAINTS YIELD name RETURN name")):
            session.run(f"DROP CONSTRAINT `{record['name']}` IF EXISTS").consume()
        for record in list(session.run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' RETURN name")):
            session.run(f"DROP INDEX `{record['name']}` IF EXISTS").consume()


@pytest.fixture
def graph(servers: Connections) -> Iterator[Connections]:
    """The one Neo4j database, emptied (data, constraints, indexes) before and after the test."""
    wipe_graph(servers)
    yield servers
    wipe_graph(servers)
