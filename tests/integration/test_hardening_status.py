"""`pg2neo status` and the drift figures stay true (issue 14, item 7 and minor items).

Place in the data flow: the runtime's reports (status rows in `pg2neo.state`, Prometheus gauges) against real
PostgreSQL and Neo4j. The Neo4j outage itself is in test_faults.py (`neo4j_outage`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver
from typer.testing import CliRunner

from pg2neo.apply.cypher import SYNCED_AT
from pg2neo.cli.main import app
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.background import DRIFT, background_check
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.status import status_report
from syncing import snapshot

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE item (id integer PRIMARY KEY, v text);
INSERT INTO item SELECT g, 'v' || g FROM generate_series(1, 50) g;
"""
MAPPING = "nodes:\n  - table: item\n    label: Item\n"


@dataclass
class Db:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping: Mapping
    servers: Connections
    mapping_file: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG2NEO_")}
        env.update(
            PG2NEO_PG_DSN=self.dsn,
            PG2NEO_NEO4J__URI=self.servers.neo4j_uri,
            PG2NEO_NEO4J__PASSWORD=self.servers.neo4j_password,
            PG2NEO_MAPPING=str(self.mapping_file),
            PG2NEO_APPLY__POLL_INTERVAL="0.05",
            PG2NEO_CHECK__ENABLED="false",
        )
        return env

    def status_text(self) -> str:
        """`pg2neo status` as text, with the table's borders and line breaks taken out (it wraps at 80 columns)."""
        shown = CliRunner().invoke(app, ["status"], env=self.env())
        assert shown.exit_code == 0, shown.output
        return " ".join(shown.stdout.replace("│", " ").replace("┃", " ").split())


@pytest.fixture
def db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        snapshot(pg_dsn, driver, mapping, page_rows=20)
        yield Db(pg_dsn, conn, driver, mapping, graph, path)


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.1)


def test_a_recent_check_does_not_erase_the_drift_a_full_check_found(db: Db) -> None:
    # Two nodes tampered with long ago: a recent check (rows and nodes changed lately) cannot see them.
    with db.driver.session() as session:
        session.run(
            f"MATCH (n:Item) WHERE n.id IN [1, 2] SET n.v = 'tampered', n.{SYNCED_AT} = datetime() - duration('PT2H')"
        ).consume()
    full = background_check(db.dsn, db.driver, db.mapping, None)
    assert full.totals()["mismatch"] == 2
    recent = background_check(db.dsn, db.driver, db.mapping, 60.0)
    assert recent.drift_total == 0  # it did not look at them
    assert DRIFT.labels("mismatch")._value.get() == 2
    drift = status_report(db.conn)["drift"]
    assert drift is not None and drift["mismatch"] == 2 and drift["total"] == 2, drift
    assert drift["last_check"] == "recent" and drift["checks"]["full"]["drift"] == 2
    assert drift["checks"]["recent"]["drift"] == 0
    assert "mismatch 2" in db.status_text()
    # The next full check is the one that lowers it, once the drift is gone.
    with db.driver.session() as session:
        session.run("MATCH (n:Item) WHERE n.id IN [1, 2] SET n.v = 'v' + toString(n.id)").consume()
    background_check(db.dsn, db.driver, db.mapping, None)
    assert DRIFT.labels("mismatch")._value.get() == 0
    assert status_report(db.conn)["drift"]["total"] == 0


def fake_service(conn: psycopg.Connection[Any], name: str, state: str, seconds_ago: float) -> None:
    conn.execute(
        "INSERT INTO pg2neo.state (name, value) VALUES (%s, jsonb_build_object('state', %s::text, 'detail', '', "
        "'since', extract(epoch FROM clock_timestamp()) - %s, 'pid', 1, "
        "'heartbeat', extract(epoch FROM clock_timestamp()) - %s))",
        (f"service:{name}", state, seconds_ago, seconds_ago),
    )


def test_a_service_that_went_away_shows_as_gone_then_disappears(db: Db) -> None:
    fake_service(db.conn, "otherhost:11", "running", 10)
    fake_service(db.conn, "otherhost:12", "running", 60)
    fake_service(db.conn, "otherhost:13", "running", 600)
    fake_service(db.conn, "otherhost:14", "running", 7200)
    states = {s["name"]: s["state"] for s in status_report(db.conn)["services"]}
    assert states == {
        "otherhost:11": "running",
        "otherhost:12": "not responding",
        "otherhost:13": "gone",
    }
    text = db.status_text()
    assert "gone since" in text and "otherhost:14" not in text, text


def test_a_killed_service_is_marked_gone_when_the_next_one_starts(db: Db) -> None:
    first = subprocess.Popen([sys.executable, "-m", "pg2neo", "run"], env=db.env(), stdout=subprocess.DEVNULL)
    wait_for(lambda: [s["state"] for s in status_report(db.conn)["services"]] == ["running"], 60, "the first service")
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Its heartbeat must be older than two beats (10 s) before a new service may take it for dead.
    wait_for(lambda: status_report(db.conn)["services"][0]["heartbeat_seconds_ago"] > 11, 30, "the heartbeat to age")
    second = subprocess.Popen([sys.executable, "-m", "pg2neo", "run"], env=db.env(), stdout=subprocess.DEVNULL)
    try:

        def states() -> dict[str, str]:
            return {s["name"]: s["state"] for s in status_report(db.conn)["services"]}

        wait_for(lambda: sorted(states().values()) == ["gone", "running"], 60, "the killed one marked gone")
        assert states()[f"{os.uname().nodename}:{first.pid}"] == "gone"
        text = db.status_text()
        assert "gone since" in text and "new service started" in text, text
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    # Stopped by a signal: its row stays and says why.
    services = {s["name"]: s for s in status_report(db.conn)["services"]}
    stopped = services[f"{os.uname().nodename}:{second.pid}"]
    assert stopped["state"] == "stopped" and stopped["detail"] == "stopped by SIGTERM", stopped
    assert "stopped by SIGTERM" in db.status_text()


def test_status_shows_snapshot_progress(db: Db) -> None:
    report = status_report(db.conn)
    assert report["snapshot"]["public.item"]["rows"] == 50 and report["snapshot"]["public.item"]["done"]
    text = db.status_text()
    assert "snapshot public.item" in text and "50 rows, done" in text
    as_json = json.loads(CliRunner().invoke(app, ["status", "--json"], env=db.env()).stdout)
    assert as_json["snapshot"]["public.item"]["finished_at"] is not None
