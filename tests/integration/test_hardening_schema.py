"""Schema changes under a running `pg2neo run` (issue 14, items 8 and 9): noticed, reported, never silent.

Place in the data flow: capture (the triggers DDL can take away or go around) and the service that must notice.
Each test starts the real `pg2neo run` process, changes the schema the way a migration would, and expects the
service to stop between batches with exit code 3, a `schema_changed` log line naming the table and the change, a
message saying what to do, and `pg2neo status` showing it; then follows that advice and compares the whole graph.
"""

from __future__ import annotations

import os
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

from faultproxy import assert_graph_exact
from pg2neo.apply.engine import Engine
from pg2neo.cli.exits import NEEDS_OPERATOR
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile import repair
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.runtime.status import status_report
from pg2neo.settings import ApplySettings
from syncing import drain

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE item (id integer PRIMARY KEY, v text NOT NULL, w text);
CREATE TABLE gone (id integer PRIMARY KEY, v text);
CREATE TABLE ev (id integer NOT NULL, region text NOT NULL, v text, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE ev_a PARTITION OF ev FOR VALUES IN ('a');
CREATE TABLE ev_b PARTITION OF ev FOR VALUES IN ('b');
INSERT INTO item SELECT g, 'v' || g, 'w' || g FROM generate_series(1, 20) g;
INSERT INTO gone SELECT g, 'g' || g FROM generate_series(1, 5) g;
INSERT INTO ev SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'e' || g FROM generate_series(1, 30) g;
"""

# `include: all` is the default: every column of each table is a property.
MAPPING = """
nodes:
  - table: item
    label: Item
  - table: gone
    label: Gone
  - table: ev
    label: Ev
"""

EXIT_SCHEMA_CHANGED = NEEDS_OPERATOR


@dataclass
class Db:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    servers: Connections
    mapping_file: Path

    def mapping(self) -> Mapping:
        return load_mapping(self.mapping_file, self.conn)

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

    def drain(self, mapping: Mapping) -> None:
        drain(self.dsn, self.driver, mapping)


@pytest.fixture
def db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        d = Db(pg_dsn, conn, driver, graph, path)
        mapping = d.mapping()
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        run_snapshot(engine, Stopper(), lambda t, r: None)
        engine.close()
        yield d


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.1)


def start_running(d: Db) -> subprocess.Popen[bytes]:
    """The real `pg2neo run`, once `pg2neo status` shows it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pg2neo", "run"], env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def running() -> bool:
        assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
        return any(s["state"] == "running" for s in status_report(d.conn)["services"])

    wait_for(running, 60, "the service to run")
    return proc


def stopped_for_schema(proc: subprocess.Popen[bytes], d: Db) -> str:
    """The service's output once it stopped by itself (within the watch's 5 s and a batch); exit code 3."""
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail("the service went on after the schema change:\n" + out.decode(errors="replace")[-3000:])
    text = out.decode(errors="replace")
    assert proc.returncode == EXIT_SCHEMA_CHANGED, text[-3000:]
    assert "schema_changed" in text
    services = status_report(d.conn)["services"]
    assert [s["state"] for s in services] == ["stopped"], services
    assert "schema changed" in services[0]["detail"], services
    return text


def schema_changes(d: Db) -> dict[tuple[str, str], dict[str, str]]:
    return {(c["table"], c["kind"]): c for c in status_report(d.conn)["schema_changes"]}


def test_column_added_to_an_include_all_table_stops_the_service(db: Db) -> None:
    proc = start_running(db)
    db.conn.execute("ALTER TABLE item ADD COLUMN extra text")
    db.conn.execute("UPDATE item SET extra = 'new', v = 'changed' WHERE id = 1")
    text = stopped_for_schema(proc, db)
    change = schema_changes(db)[("public.item", "columns_changed")]
    assert "added extra" in change["detail"] and "include: all" in change["detail"]
    assert "pg2neo init" in change["remedy"] and "snapshot --restart" in change["remedy"]
    assert "public.item" in text and "pg2neo init" in text
    # The advice works: init for the new mapping, a snapshot again, and the graph has the column.
    mapping = db.mapping()
    install.init(db.conn, db.driver, mapping)
    engine = Engine(db.dsn, db.driver, mapping, ApplySettings())
    engine.reset_snapshot()
    run_snapshot(engine, Stopper(), lambda t, r: None)
    engine.close()
    db.drain(mapping)
    assert_graph_exact(db.conn, db.driver, mapping)
    # A service started on the clean catalog runs, and takes the report away.
    proc = start_running(db)
    assert schema_changes(db) == {}
    proc.terminate()
    proc.communicate(timeout=60)


def test_drop_column_cascade_that_drops_the_update_trigger_is_reported(db: Db) -> None:
    proc = start_running(db)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        db.conn.execute("ALTER TABLE item DROP COLUMN w")  # the UPDATE trigger's WHEN clause names it
    db.conn.execute("ALTER TABLE item DROP COLUMN w CASCADE")  # PostgreSQL's own hint
    db.conn.execute("UPDATE item SET v = 'not captured' WHERE id = 2")
    text = stopped_for_schema(proc, db)
    change = schema_changes(db)[("public.item", "capture_lost")]
    assert "pg2neo_capture_update" in change["detail"] and "NOT queued" in change["detail"]
    assert "pg2neo init" in change["remedy"] and "reconcile --policy pg-wins --apply" in change["remedy"]
    assert "NOT queued" in text
    # Follow the advice: the lost update comes back.
    mapping = db.mapping()
    install.init(db.conn, db.driver, mapping)
    report = verify(db.dsn, db.driver, mapping)
    assert report.drift_total > 0  # the update that was not captured, and the `w` property no longer mapped
    repair.reconcile(db.dsn, db.driver, mapping, report.drifts, "pg-wins", True)
    db.drain(mapping)
    assert_graph_exact(db.conn, db.driver, mapping)


def test_dropped_mapped_table_is_reported_with_its_leftover_nodes(db: Db) -> None:
    proc = start_running(db)
    db.conn.execute("DROP TABLE gone")
    text = stopped_for_schema(proc, db)
    change = schema_changes(db)[("public.gone", "table_dropped")]
    assert "still in Neo4j" in change["remedy"] and "Gone" in change["remedy"] and "DETACH DELETE" in change["remedy"]
    assert "public.gone" in text
    with db.driver.session() as session:
        record = session.run("MATCH (n:Gone) RETURN count(n) AS n").single()
    assert record is not None and record["n"] == 5  # what the message says is there


def test_detached_partition_is_reported(db: Db) -> None:
    proc = start_running(db)
    db.conn.execute("ALTER TABLE ev DETACH PARTITION ev_b")
    stopped_for_schema(proc, db)
    change = schema_changes(db)[("public.ev", "partitions_changed")]
    assert "ev_b" in change["detail"] and "detached" in change["detail"] and "STILL in Neo4j" in change["detail"]
    assert "reconcile --policy pg-wins --apply" in change["remedy"]
    # Follow the advice: the detached rows' nodes go.
    mapping = db.mapping()
    install.init(db.conn, db.driver, mapping)
    report = verify(db.dsn, db.driver, mapping)
    assert report.totals()["extra"] == 15
    repair.reconcile(db.dsn, db.driver, mapping, report.drifts, "pg-wins", True)
    assert_graph_exact(db.conn, db.driver, mapping)


def test_attached_partition_is_reported(db: Db) -> None:
    db.conn.execute("CREATE TABLE ev_c (id integer NOT NULL, region text NOT NULL, v text, PRIMARY KEY (id, region))")
    db.conn.execute("INSERT INTO ev_c SELECT g, 'c', 'c' || g FROM generate_series(100, 109) g")
    proc = start_running(db)
    db.conn.execute("ALTER TABLE ev ATTACH PARTITION ev_c FOR VALUES IN ('c')")
    stopped_for_schema(proc, db)
    change = schema_changes(db)[("public.ev", "partitions_changed")]
    assert "ev_c" in change["detail"] and "attached" in change["detail"] and "NOT in Neo4j" in change["detail"]


def test_an_unmapped_column_change_is_accepted(tmp_path: Path, db: Db) -> None:
    """A mapping with an explicit column list: a new column it does not include changes nothing; the service goes on."""
    path = tmp_path / "explicit.yaml"
    path.write_text(MAPPING.replace("label: Item", "label: Item\n    properties:\n      include: [v, w]"))
    db.mapping_file = path
    install.init(db.conn, db.driver, db.mapping())
    proc = start_running(db)
    db.conn.execute("ALTER TABLE item ADD COLUMN note text")
    db.conn.execute("UPDATE item SET v = 'after' WHERE id = 3")
    time.sleep(8)  # longer than the watch's interval: give it the chance to stop the service wrongly
    assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
    with db.driver.session() as session:
        wait_for(
            lambda: session.run("MATCH (n:Item {id: 3}) RETURN n.v AS v").single()["v"] == "after",  # type: ignore[index]
            30,
            "the update to be applied",
        )
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    assert "schema_changed" in out.decode(errors="replace")  # logged, as accepted
