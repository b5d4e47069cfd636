"""`verify` finds every kind of drift injected on either side, with exact counts, and none on a clean sync."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from neo4j import Driver
from typer.testing import CliRunner

from pg2neo.apply.engine import Engine
from pg2neo.cli.main import app
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.background import DRIFT, BackgroundCheck, background_check
from pg2neo.reconcile.verify import VerifyReport, verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service, run_snapshot
from pg2neo.runtime.status import status_report
from pg2neo.settings import ApplySettings
from pg2neo.transport.schema import mark_own_write

SCALE = 12


@dataclass
class Synced:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping: Mapping
    engine: Engine
    conns: Connections

    def cypher(self, query: str, **params: Any) -> list[Any]:
        with self.driver.session() as session:
            return list(session.run(query, **params))

    def pg_quiet(self, query: str, params: tuple[Any, ...] = ()) -> None:
        """A write the capture triggers do not queue (as a repair or an out-of-band fix would be)."""
        with self.conn.transaction():
            mark_own_write(self.conn)
            self.conn.execute(query, params)

    def drain(self) -> None:
        while self.engine.apply_next():
            pass


@pytest.fixture
def synced(pg_dsn: str, graph: Connections) -> Iterator[Synced]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        load_schema(conn)
        generate(conn, SCALE)
        mapping = load_mapping(mapping_path(), conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings(snapshot_batch_rows=500))
        run_snapshot(engine, Stopper(), lambda t, r: None)
        try:
            yield Synced(pg_dsn, conn, driver, mapping, engine, graph)
        finally:
            engine.close()


def counts(report: VerifyReport) -> dict[str, dict[str, int]]:
    return {s.scope: {k: v for k, v in s.counts.items() if v} for s in report.scopes if any(s.counts.values())}


def test_clean_sync_reports_no_drift_and_hashes_are_stamped(synced: Synced) -> None:
    report = verify(synced.dsn, synced.driver, synced.mapping)
    assert report.drift_total == 0, counts(report)
    users = next(s for s in report.scopes if s.scope == ":User")
    assert users.pg_items == users.neo4j_items > 0
    assert all(s.differing_buckets == 0 for s in report.scopes)
    stamped = synced.cypher("MATCH (n:User) WHERE n._pg2neo_hash IS NULL RETURN count(n) AS c")[0]["c"]
    assert stamped == 0
    json.dumps(report.as_dict())


def _one(synced: Synced, query: str) -> Any:
    return synced.conn.execute(query).fetchone()[0]  # type: ignore[index]


def inject_all(synced: Synced) -> dict[str, dict[str, int]]:
    """One of each kind of drift; returns the counts verify must report."""
    c = synced.cypher
    # Neo4j side: a deleted node (its relationships go with it), an extra node, a changed and a removed property.
    user = _one(synced, "SELECT id::text FROM users ORDER BY id LIMIT 1")
    user_rels = c(
        "MATCH (u:User {id: $id}) RETURN count{ (u)-[:MEMBER_OF]->() } AS m, count{ (u)-[:AUTHORED]->() } AS a, "
        "count{ (u)-[:STARTED]->() } AS s, count{ (u)-[:SENT]->() } AS sent",
        id=user,
    )[0]
    c("MATCH (u:User {id: $id}) DETACH DELETE u", id=user)
    c("CREATE (:Tenant {id: 'ffffffff-0000-0000-0000-000000000000', name: 'ghost'})")
    tenant = _one(synced, "SELECT id::text FROM tenants ORDER BY id LIMIT 1")
    c("MATCH (t:Tenant {id: $id}) SET t.name = 'tampered'", id=tenant)
    item = _one(synced, "SELECT neo4j_node_id::text FROM content_items WHERE title IS NOT NULL ORDER BY id LIMIT 1")
    c("MATCH (n:ContentItem {id: $id}) REMOVE n.title", id=item)
    # Relationships: a missing FK one, an extra FK one, a re-pointed FK one, a missing/extra join one, changed props.
    chunk = _one(synced, "SELECT neo4j_node_id::text FROM content_chunks ORDER BY id LIMIT 1")
    c("MATCH (:ContentItem)-[r:HAS_CHUNK]->(:ContentChunk {id: $id}) DELETE r", id=chunk)
    chunk2 = _one(synced, "SELECT neo4j_node_id::text FROM content_chunks ORDER BY id DESC LIMIT 1")
    c(
        "MATCH (ch:ContentChunk {id: $id}) MATCH (ci:ContentItem {id: $item}) "
        "WHERE NOT (ci)-[:HAS_CHUNK]->(ch) CREATE (ci)-[:HAS_CHUNK]->(ch)",
        id=chunk2,
        item=item,
    )
    # re-pointed: a message moved to another thread in Neo4j only (one missing + one extra)
    msg = _one(synced, "SELECT neo4j_node_id::text FROM messages ORDER BY id LIMIT 1")
    other_thread = _one(
        synced,
        "SELECT t.neo4j_node_id::text FROM threads t WHERE t.id <> (SELECT thread_id FROM messages ORDER BY id "
        "LIMIT 1) ORDER BY t.id LIMIT 1",
    )
    c(
        "MATCH (:Thread)-[r:CONTAINS_MESSAGE]->(m:Message {id: $m}) DELETE r WITH m "
        "MATCH (t:Thread {id: $t}) CREATE (t)-[:CONTAINS_MESSAGE]->(m)",
        m=msg,
        t=other_thread,
    )
    c("MATCH ()-[r:INCLUDES]->() WITH r ORDER BY r._pg2neo_key LIMIT 1 DELETE r")
    c(
        "MATCH ()-[r:USED_CONTEXT]->() WITH r ORDER BY r._pg2neo_key LIMIT 1 SET r.rank = r.rank + 100",
    )
    c('MATCH (a:Thread), (b:ContentItem) WITH a, b LIMIT 1 CREATE (a)-[:INCLUDES {_pg2neo_key: \'["x","y"]\'}]->(b)')
    # PostgreSQL side, with capture off: a changed column, a row the graph does not have.
    synced.pg_quiet(
        "UPDATE projects SET name = name || ' (renamed)' WHERE id = (SELECT id FROM projects ORDER BY id LIMIT 1)"
    )
    synced.pg_quiet(
        "INSERT INTO tenants (id, name) VALUES ('eeeeeeee-0000-0000-0000-000000000000', 'pg only')",
    )
    users_missing = {":User": {"missing": 1}}
    fk_missing = {
        "(:User)-[:MEMBER_OF]->(:Tenant)": {"missing": user_rels["m"]},
        "(:ContentItem)<-[:AUTHORED]-(:User)": {"missing": user_rels["a"]},
        "(:Thread)<-[:STARTED]-(:User)": {"missing": user_rels["s"]},
        "(:Message)<-[:SENT]-(:User)": {"missing": user_rels["sent"]},
    }
    expected: dict[str, dict[str, int]] = {
        **users_missing,
        **{k: v for k, v in fk_missing.items() if v["missing"]},
        ":Tenant": {"extra": 1, "mismatch": 1, "missing": 1},
        ":ContentItem": {"mismatch": 1},
        ":Project": {"mismatch": 1},
        "(:ContentChunk)<-[:HAS_CHUNK]-(:ContentItem)": {"missing": 1, "extra": 1},
        "(:Message)<-[:CONTAINS_MESSAGE]-(:Thread)": {"missing": 1, "extra": 1},
        "(:Thread)-[:INCLUDES]->(:ContentItem)": {"missing": 1, "extra": 1},
        "(:Message)-[:USED_CONTEXT]->(:ContentChunk)": {"mismatch": 1},
    }
    return expected


def test_every_kind_of_drift_is_found_with_exact_counts(synced: Synced) -> None:
    expected = inject_all(synced)
    report = verify(synced.dsn, synced.driver, synced.mapping)
    assert counts(report) == expected
    assert report.drift_total == sum(sum(v.values()) for v in expected.values())
    tenant = next(s for s in report.scopes if s.scope == ":Tenant")
    assert tenant.samples["extra"] == [["ffffffff-0000-0000-0000-000000000000"]]
    assert tenant.samples["missing"] == [["eeeeeeee-0000-0000-0000-000000000000"]]


def test_tampered_property_with_its_stored_hash_is_still_found(synced: Synced) -> None:
    synced.cypher("MATCH (n:Program) WITH n LIMIT 1 SET n.name = 'x'")  # stored _pg2neo_hash left as it was
    report = verify(synced.dsn, synced.driver, synced.mapping)
    assert counts(report) == {":Program": {"mismatch": 1}}


def test_recent_check_publishes_gauges_and_stale_alarm(synced: Synced) -> None:
    report = background_check(synced.dsn, synced.driver, synced.mapping, since_seconds=3600)
    assert report.drift_total == 0, counts(report)
    # A row changed long after its node was synced, and the change never reached the graph.
    synced.pg_quiet(
        "UPDATE users SET display_name = 'late', updated_at = now() + interval '1 hour' "
        "WHERE id = (SELECT id FROM users ORDER BY id LIMIT 1)"
    )
    report = background_check(synced.dsn, synced.driver, synced.mapping, since_seconds=7200, stale_after_seconds=60)
    assert report.stale == 1
    assert counts(report) == {":User": {"mismatch": 1}}
    assert DRIFT.labels("stale")._value.get() == 1
    assert DRIFT.labels("mismatch")._value.get() == 1


def test_cli_verify_reconcile_and_conflicts(synced: Synced) -> None:
    env = {
        "PG2NEO_PG_DSN": synced.dsn,
        "PG2NEO_NEO4J__URI": synced.conns.neo4j_uri,
        "PG2NEO_NEO4J__PASSWORD": synced.conns.neo4j_password,
        "PG2NEO_MAPPING": str(mapping_path()),
    }
    runner = CliRunner()
    clean = runner.invoke(app, ["verify", "--json"], env=env)
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["drift"] == 0
    synced.cypher("MATCH (n:Program) WITH n LIMIT 1 SET n.name = 'cli drift'")
    drifted = runner.invoke(app, ["verify", "--json"], env=env)
    assert drifted.exit_code == 1
    assert json.loads(drifted.stdout)["totals"]["mismatch"] == 1
    table = runner.invoke(app, ["verify"], env=env)
    assert table.exit_code == 1 and ":Program" in table.stdout and "drift: 1" in table.stdout
    dry = runner.invoke(app, ["reconcile", "--policy", "pg-wins", "--json"], env=env)
    assert dry.exit_code == 0 and json.loads(dry.stdout)["applied"] is False
    assert runner.invoke(app, ["verify"], env=env).exit_code == 1
    manual = runner.invoke(app, ["reconcile", "--policy", "manual", "--apply"], env=env)
    assert manual.exit_code == 0, manual.output
    listed = json.loads(runner.invoke(app, ["conflicts", "list", "--json"], env=env).stdout)
    assert len(listed) == 1 and listed[0]["scope"] == ":Program"
    shown = runner.invoke(app, ["conflicts", "show", str(listed[0]["id"])], env=env)
    assert "cli drift" in shown.stdout
    resolved = runner.invoke(app, ["conflicts", "resolve", str(listed[0]["id"]), "--take", "pg"], env=env)
    assert resolved.exit_code == 0, resolved.output
    assert runner.invoke(app, ["verify"], env=env).exit_code == 0
    bad = runner.invoke(app, ["reconcile", "--policy", "nope"], env=env)
    assert bad.exit_code == 2


def test_background_check_runs_from_the_service_idle_hook(synced: Synced) -> None:
    synced.cypher("MATCH (n:Project) WITH n LIMIT 2 SET n.name = 'bg drift'")
    check = BackgroundCheck(synced.dsn, synced.driver, synced.mapping, interval=0, background=False, full_at_start=True)
    stopper = Stopper()

    def on_idle() -> None:
        check()
        stopper.event.set()

    run_service(synced.engine, stopper, 0.01, on_idle=on_idle)
    assert DRIFT.labels("mismatch")._value.get() == 2  # the first check is a full one
    drift = status_report(synced.conn)["drift"]
    assert drift is not None and drift["last_check"] == "full" and drift["mismatch"] == 2 and drift["total"] == 2
    env = {
        "PG2NEO_PG_DSN": synced.dsn,
        "PG2NEO_NEO4J__URI": synced.conns.neo4j_uri,
        "PG2NEO_NEO4J__PASSWORD": synced.conns.neo4j_password,
        "PG2NEO_MAPPING": str(mapping_path()),
    }
    shown = CliRunner().invoke(app, ["status"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "drift (background check)" in shown.stdout and "mismatch 2" in shown.stdout
