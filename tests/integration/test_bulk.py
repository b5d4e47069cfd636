"""`pg2neo snapshot --bulk` against real servers: the graph `neo4j-admin database import full` loads must be the one
the Bolt snapshot writes, and the handoff to the queue exact while writes go on.

Place in the data flow: PostgreSQL rows -> exported snapshot -> COPY -> import CSV -> neo4j-admin -> Neo4j, then
the queue -> Engine -> Neo4j. The import replaces the whole `neo4j` database, so the loads run on a Neo4j of this
module's own (`bulk_neo4j`, its own folder and port), never on the session's shared one, except the CLI test of the
local stack, which uses the session's stack (`owned_stack`) on an emptied graph.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver, GraphDatabase
from typer.testing import CliRunner

from oracle import REFERENCE, assert_graph_matches
from pg2neo.apply.engine import Engine
from pg2neo.cli.main import app
from pg2neo.demo.flow import mapping_path
from pg2neo.demo.generate import generate, load_schema
from pg2neo.demo.workload import live_burst
from pg2neo.devstack.neo4j import LocalNeo4j
from pg2neo.devstack.process import free_port
from pg2neo.devstack.stack import LocalStack
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.bulk import bulk_load
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import ApplySettings, DevSettings

# Each load stops and starts a Neo4j: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def bulk_neo4j() -> Iterator[LocalNeo4j]:
    """A Neo4j of this module's own: the bulk loads replace its `neo4j` database."""
    root = Path(tempfile.mkdtemp(prefix="pg2neo-bulk-neo4j-", dir="/tmp"))
    neo4j = LocalNeo4j(root, DevSettings().cache_dir, free_port(), heap="512m", pagecache="256m")
    try:
        neo4j.start()
        yield neo4j
    finally:
        neo4j.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bulk_driver(bulk_neo4j: LocalNeo4j) -> Iterator[Driver]:
    with GraphDatabase.driver(
        bulk_neo4j.uri, auth=("neo4j", bulk_neo4j.password), notifications_min_severity="OFF"
    ) as driver:
        _empty(driver)
        yield driver


def _empty(driver: Driver) -> None:
    with driver.session() as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def _queued(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
    assert row is not None
    return int(row[0])


class Writes:
    """Demo workload writes on a connection of their own, `limit` batches of 5 at most, until stopped: some before
    the export (queued before the snapshot), the others while it runs."""

    def __init__(self, dsn: str, limit: int = 40) -> None:
        self.dsn = dsn
        self.limit = limit
        self.stop = threading.Event()
        self.batches = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set() and self.batches < self.limit:
                    live_burst(conn, 5, seed=self.batches)
                    self.batches += 1
                    self.stop.wait(0.1)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Writes:
        self.thread.start()
        while self.batches < 3 and self.thread.is_alive():  # some changes queued before the snapshot
            self.stop.wait(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert self.error is None, self.error


def _reference(dsn: str, driver: Driver, scale: int) -> tuple[psycopg.Connection[Any], Mapping]:
    conn = psycopg.connect(dsn, autocommit=True)
    load_schema(conn)
    generate(conn, scale)
    mapping = load_mapping(mapping_path(), conn)
    install.init(conn, driver, mapping)
    return conn, mapping


def test_bulk_load_while_writes_go_on_hands_off_exactly(
    pg_dsn: str, bulk_neo4j: LocalNeo4j, bulk_driver: Driver
) -> None:
    conn, mapping = _reference(pg_dsn, bulk_driver, scale=4)
    out = Path(tempfile.mkdtemp(prefix="pg2neo-bulk-files-"))
    try:
        with Writes(pg_dsn) as writes:
            before = writes.batches
            outcome = bulk_load(pg_dsn, bulk_driver, mapping, "neo4j", out, 2, bulk_neo4j.import_full)
            assert writes.batches > before  # writes went on during the export and the import
        state = conn.execute("SELECT value FROM pg2neo.state WHERE name = 'bulk_snapshot'").fetchone()
        assert state is not None
        snapshot, epoch = state[0]["pg_snapshot"], state[0]["epoch"]
        # The handoff: changes the snapshot saw left the queue; every change still queued was committed after it.
        assert outcome.covered_changes > 0
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_visible_in_snapshot(txid, %s::pg_snapshot)), count(*) "
            "FROM pg2neo.changes",
            (snapshot,),
        ).fetchone()
        assert row is not None
        assert row[0] == 0 and row[1] > 0, row
        with bulk_driver.session() as session:
            versions = session.run(
                "MATCH (n) WHERE n._pg2neo_version IS NOT NULL RETURN collect(DISTINCT n._pg2neo_version) AS v"
            ).single()
        assert versions is not None and versions["v"] == [epoch]
        engine = Engine(pg_dsn, bulk_driver, mapping, ApplySettings())
        try:
            engine.drain()
        finally:
            engine.close()
        assert _queued(conn) == 0
        assert_graph_matches(conn, bulk_driver, REFERENCE)
        assert _drift(pg_dsn, bulk_driver, mapping) == []
        # A second bulk load refuses the graph it made.
        result = _cli(["snapshot", "--bulk", "--bulk-dir", str(out)], pg_dsn, bulk_neo4j.uri, bulk_neo4j.password)
        assert result.exit_code != 0
        assert "the graph is not empty" in result.output and "pg2neo snapshot` (without --bulk)" in result.output
    finally:
        conn.close()
        shutil.rmtree(out, ignore_errors=True)


def _cli(args: list[str], dsn: str, uri: str | None, password: str | None, state: Path | None = None) -> Any:
    env = {"PG2NEO_PG_DSN": dsn, "PG2NEO_MAPPING": str(mapping_path())}
    if uri is not None and password is not None:
        env |= {"PG2NEO_NEO4J__URI": uri, "PG2NEO_NEO4J__PASSWORD": password}
    env["PG2NEO_DEV__STATE_DIR"] = str(state or Path(tempfile.gettempdir()) / "pg2neo-no-stack")
    return CliRunner().invoke(app, args, env=env, catch_exceptions=False)


# -- the same graph as the Bolt snapshot, value type for value type ---------------------------------------------------

KINDS_SQL = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE owners (id bigint PRIMARY KEY, born date);
CREATE TABLE kinds (
    id integer PRIMARY KEY,
    owner_id bigint REFERENCES owners (id),
    t text, v varchar(20), c char(4), u uuid, b boolean, i2 smallint, i8 bigint, f4 real, f8 double precision,
    n numeric, by bytea, d date, ts timestamp, tz timestamptz, tm time, ttz timetz, iv interval, j json, jb jsonb,
    m mood, money money, ints integer[], texts text[], floats float8[], tzs timestamptz[], dates date[]
);
CREATE TABLE stamps (at timestamptz PRIMARY KEY, note text);
CREATE TABLE links (
    a integer NOT NULL REFERENCES kinds (id), b timestamptz REFERENCES stamps (at), score numeric, tag text,
    PRIMARY KEY (a, tag)
);
INSERT INTO owners VALUES (1, '2001-02-03'), (2, 'infinity'), (3, NULL);
INSERT INTO kinds VALUES
 (1, 1, 'plain', 'v', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 7, 9007199254740993, 1.5, 0.1, 12.25,
  '\\x00ff7f80', '2024-02-29', '2024-02-29 10:11:12.123456', '2024-02-29 10:11:12.654321+02', '23:59:59.999999',
  '10:00:00+05:30', 'P1Y2M3DT4H5M6.5S', '{"a": [1, 2]}', '{"b": null}', 'calm', 12.34, '{1,2,3}', '{x,y}',
  '{0.5,1e300}', '{"2024-01-01 00:00:00+00"}', '{2024-01-01}'),
 (2, 2, 'a "quoted", comma; semi', '', '', NULL, false, -1, -9, -0.0, 1e-300, -1e20, '\\x', '0001-01-01',
  '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '00:00:00', '00:00:00-08', 'P-1DT-1S', '[]', '{}', 'busy',
  0, '{}', '{"a;b", ""}', '{NaN}', '{}', '{}'),
 (3, NULL, E'line\\nbreak\\r\\nand\\ttab', NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', 'Infinity', NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{"x,y", "q\\"uote"}', NULL, NULL, NULL),
 (4, 3, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'infinity', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO stamps VALUES ('2024-05-06 07:08:09.5+00', 'x'), ('1999-12-31 23:59:59+00', NULL);
-- Text with CR LF line breaks, several MB of it: neo4j-admin's parallel (v2) multi-line parser fails on a CR near
-- the end of its 4 MB read buffer ("found CR outside a text cell"), which the 1M-row benchmark hit.
INSERT INTO stamps SELECT '2010-01-01 00:00:00+00'::timestamptz + g * interval '1 second', repeat(E'line\r\nbreak ', 60)
 FROM generate_series(1, 12000) g;
INSERT INTO links VALUES (1, '2024-05-06 07:08:09.5+00', 0.25, 'one'), (2, NULL, NULL, 'two'),
 (3, '1999-12-31 23:59:59+00', 3, 'three'), (4, '1999-12-31 23:59:59+00', 4, 'four');
"""

KINDS_MAPPING = """
version: 1
schema: public
nodes:
  - table: owners
    label: Owner
  - table: kinds
    labels: [Kind, Thing]
    properties:
      types: {money: string}
    relationships:
      - {type: OWNED_BY, columns: owner_id, to: owners}
  - table: stamps
    label: Stamp
relationships:
  - table: links
    type: LINKS
    from: {table: kinds, columns: a}
    to: {table: stamps, columns: b}
"""

STAMPS = ("_pg2neo_synced_at", "_pg2neo_version")


def _dump(driver: Driver) -> tuple[list[Any], list[Any]]:
    """Every node and relationship with each property's Cypher type and Python value (stamps: type only)."""

    def props(record: Any, keys: str, types: str) -> tuple[Any, ...]:
        values = dict(record[keys])
        return tuple(
            sorted(
                (k, t, None if k in STAMPS else repr(values[k]))
                for k, t in zip(record[types + "k"], record[types], strict=True)
            )
        )

    with driver.session() as session:
        nodes = sorted(
            (tuple(sorted(r["l"])), props(r, "p", "t"))
            for r in session.run(
                "MATCH (n) WHERE NOT n:_Pg2neoEpoch RETURN labels(n) AS l, properties(n) AS p, "
                "keys(n) AS tk, [k IN keys(n) | valueType(n[k])] AS t"
            )
        )
        rels = sorted(
            (r["type"], _end(r["a"]), _end(r["b"]), props(r, "p", "t"))
            for r in session.run(
                "MATCH (a)-[r]->(b) RETURN type(r) AS type, properties(r) AS p, "
                "[k IN keys(r) | valueType(r[k])] AS t, keys(r) AS tk, properties(a) AS a, properties(b) AS b"
            )
        )
    return nodes, rels


def _end(props: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v)) for k, v in props.items() if not k.startswith("_pg2neo")))


def test_bulk_graph_is_the_bolt_snapshot_graph(
    pg_dsn: str, graph: Connections, bulk_neo4j: LocalNeo4j, bulk_driver: Driver, tmp_path: Path
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(KINDS_SQL)
        (tmp_path / "kinds.yaml").write_text(KINDS_MAPPING)
        mapping = load_mapping(tmp_path / "kinds.yaml", conn)
        with graph.driver() as bolt_driver:
            install.init(conn, bolt_driver, mapping)
            engine = Engine(pg_dsn, bolt_driver, mapping, ApplySettings())
            try:
                run_snapshot(engine, Stopper(), lambda table, result: None)
            finally:
                engine.close()
            expected = _dump(bolt_driver)
            bolt_drift = _drift(pg_dsn, bolt_driver, mapping)
            bolt_dead = conn.execute("SELECT tbl, key, message FROM pg2neo.dead_letters ORDER BY tbl, key").fetchall()
        conn.execute("DELETE FROM pg2neo.dead_letters")
        conn.execute("DELETE FROM pg2neo.snapshot_progress")
        install.init(conn, bulk_driver, mapping)
        bulk_load(pg_dsn, bulk_driver, mapping, "neo4j", tmp_path / "files", 2, bulk_neo4j.import_full)
        actual = _dump(bulk_driver)
        bulk_dead = conn.execute("SELECT tbl, key, message FROM pg2neo.dead_letters ORDER BY tbl, key").fetchall()
    assert bolt_dead and bulk_dead == bolt_dead  # the 'infinity' dates are dead letters either way
    assert actual[0] == expected[0], _first_difference(expected[0], actual[0])
    assert actual[1] == expected[1], _first_difference(expected[1], actual[1])
    # verify sees the same drift in both graphs: the dead letters' rows alone, missing from each
    assert _drift(pg_dsn, bulk_driver, mapping) == bolt_drift


def _drift(dsn: str, driver: Driver, mapping: Mapping) -> list[Any]:
    report = verify(dsn, driver, mapping)
    return sorted((s.scope, k, n, s.samples[k]) for s in report.scopes for k, n in s.counts.items() if n)


def _first_difference(expected: list[Any], actual: list[Any]) -> str:
    missing = [e for e in expected if e not in actual]
    extra = [a for a in actual if a not in expected]
    return f"missing: {missing[:3]}\nextra: {extra[:3]}"


# -- a Neo4j pg2neo does not run: the files and the command ----------------------------------------------------------


def test_other_neo4j_gets_the_files_and_the_command(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    with graph.driver() as driver:
        conn = _reference(pg_dsn, driver, scale=1)[0]
        out = tmp_path / "files"
        result = _cli(["snapshot", "--bulk", "--bulk-dir", str(out)], pg_dsn, graph.neo4j_uri, graph.neo4j_password)
        assert result.exit_code == 0, result.output
        assert "neo4j-admin database import full" in " ".join(result.output.split())
        assert "pg2neo snapshot --bulk-finish" in " ".join(result.output.split())
        assert list(out.glob("nodes-*.csv")) and list(out.glob("header-nodes-*.csv"))
        assert (out / "manifest.json").exists()
        pending = conn.execute("SELECT value FROM pg2neo.state WHERE name = 'bulk_load'").fetchone()
        assert pending is not None
        with driver.session() as session:
            nodes = session.run("MATCH (n) RETURN count(n) AS c").single()
        assert nodes is not None and nodes["c"] == 0  # nothing written to a Neo4j pg2neo does not run
        conn.close()


def test_local_stack_cli_bulk_then_run(pg_dsn: str, graph: Connections, owned_stack: LocalStack) -> None:
    """The CLI on the session's own stack: Neo4j stopped, imported, started; then `run --until-empty`."""
    with graph.driver() as driver:
        conn = _reference(pg_dsn, driver, scale=1)[0]
        live_burst(conn, 20, seed=3)  # queued before the snapshot: covered by it
        result = _cli(["snapshot", "--bulk"], pg_dsn, None, None, owned_stack.state_dir)
        assert result.exit_code == 0, result.output
        assert "bulk snapshot" in result.output
        assert _queued(conn) == 0
        live_burst(conn, 20, seed=4)
        result = _cli(["run", "--until-empty"], pg_dsn, None, None, owned_stack.state_dir)
        assert result.exit_code == 0, result.output
        with graph.driver() as fresh:
            assert_graph_matches(conn, fresh, REFERENCE)
        conn.close()
