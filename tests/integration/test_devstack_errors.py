"""The local stack's usual failures give clear errors, or are recovered from, with real processes and sockets.

Place in the data flow: before it — `pg2neo dev up`. No servers are needed: each test provokes one failure.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pg2neo.devstack import neo4j as neo4j_module
from pg2neo.devstack.neo4j import LocalNeo4j, fetch_jars
from pg2neo.devstack.postgres import LocalPostgres
from pg2neo.errors import StackError

pytestmark = pytest.mark.integration


def test_port_taken_says_which_and_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        neo4j = LocalNeo4j(tmp_path / "neo4j", Path.home() / ".cache" / "pg2neo", port)
        with pytest.raises(StackError, match=f"Bolt port {port} is taken by another process") as refused:
            neo4j.start()
        assert "stack.json" in str(refused.value)
        postgres = LocalPostgres(tmp_path / "postgres", port)
        with pytest.raises(StackError, match=f"port {port} for PostgreSQL is taken") as refused_pg:
            postgres.start()
        assert "stack.json" in str(refused_pg.value)


def test_stale_pid_file_after_a_crash_is_forgotten(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    neo4j = LocalNeo4j(tmp_path / "neo4j", tmp_path / "cache", 1)
    neo4j.pid_file.parent.mkdir(parents=True)
    neo4j.pid_file.write_text(dead.stdout.strip() + "\n")
    assert neo4j.running_pid() is None  # recovered, not refused
    assert not neo4j.pid_file.exists()


def test_java_missing_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java on it
    neo4j = LocalNeo4j(tmp_path / "neo4j", tmp_path / "cache", 1)
    with pytest.raises(StackError, match="java") as refused:
        neo4j._java()
    assert "openjdk-17" in str(refused.value)


def test_failed_maven_fetch_names_the_artifact_and_how_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(neo4j_module, "NEO4J_VERSION", "5.26.9999")  # no such release on Maven Central
    monkeypatch.setattr(neo4j_module, "ARTIFACTS", ("org.neo4j:neo4j:5.26.9999",))
    with pytest.raises(StackError) as refused:
        fetch_jars(tmp_path / "cache")
    message = str(refused.value)
    assert "could not fetch Neo4j from Maven Central" in message and "org.neo4j:neo4j:5.26.9999" in message
    assert "retry `pg2neo dev up`" in message
    assert not (tmp_path / "cache" / "neo4j-5.26.9999-apoc-5.26.19" / "lib" / ".complete").exists()
