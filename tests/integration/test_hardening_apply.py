"""Hardening of the apply stage (issue 14, items 1 and 2), against real PostgreSQL and Neo4j.

1. One row never stops syncing: whatever fails for it (conversion, hashing, packing, Neo4j, the read itself), it
   becomes a dead letter with its reason, the rest of its batch lands and the service goes on. A property-based
   test over every supported type and value shape checks: every row is either in the graph exactly (verify finds
   no mismatch) or a dead letter, and nothing else.
2. The version guard never refuses a newer PostgreSQL state: after `uninstall` + `init`, a sequence reset (a
   restore of PostgreSQL from backup), or a second database feeding the same graph; and a repair that did not
   take effect never reports success.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from neo4j import Driver
from psycopg import sql

from pg2neo.errors import ReconcileError
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile import repair
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from syncing import drain, snapshot

pytestmark = pytest.mark.integration

Db = tuple[psycopg.Connection[Any], Driver, Mapping]


def setup_db(conn: psycopg.Connection[Any], driver: Driver, tmp_path: Path, schema: str, mapping: str) -> Mapping:
    path = tmp_path / "mapping.yaml"
    path.write_text(mapping)
    conn.execute(schema)
    loaded = load_mapping(path, conn)
    install.init(conn, driver, loaded)
    return loaded


def dead_keys(conn: psycopg.Connection[Any]) -> dict[tuple[str, tuple[str, ...]], str]:
    rows = conn.execute("SELECT tbl, key, message FROM pg2neo.dead_letters").fetchall()
    return {(r[0], tuple(r[1])): r[2] for r in rows}


def queued(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg2neo.changes").fetchone()
    assert row is not None
    return int(row[0])


# -- item 1: one row never stops syncing ------------------------------------------------------------------------------

BRANCHES = """
CREATE TABLE branches (code text PRIMARY KEY, name text);
CREATE TABLE oddities (id integer PRIMARY KEY, ttz timetz, note text);
CREATE TABLE later (id integer PRIMARY KEY, name text);
"""
BRANCHES_MAPPING = """
nodes:
  - table: branches
    label: Branch
  - table: oddities
    label: Oddity
  - table: later
    label: Later
"""


@pytest.fixture
def branches(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        yield conn, driver, setup_db(conn, driver, tmp_path, BRANCHES, BRANCHES_MAPPING)


def test_timetz_and_a_key_too_large_to_index_do_not_stop_the_queue(branches: Db, pg_dsn: str) -> None:
    conn, driver, mapping = branches
    conn.execute("INSERT INTO oddities (id, ttz, note) VALUES (60, '12:00:00+05:30', 'a'), (61, NULL, 'b')")
    conn.execute("INSERT INTO branches (code, name) VALUES (repeat('x', 10000), 'k'), ('ok', 'fine')")
    conn.execute("INSERT INTO later (id, name) VALUES (1, 'after')")
    drain(pg_dsn, driver, mapping)

    assert queued(conn) == 0
    letters = dead_keys(conn)
    assert list(letters) == [("public.branches", ("x" * 10000,))]
    assert "Neo4j refused the row" in letters[("public.branches", ("x" * 10000,))]
    with driver.session() as session:
        ttz = session.run("MATCH (o:Oddity {id: 60}) RETURN o.ttz AS t").single()
        names = {r["code"] for r in session.run("MATCH (b:Branch) RETURN b.code AS code")}
        later = session.run("MATCH (n:Later) RETURN count(n) AS c").single()
    assert ttz is not None and ttz["t"].to_native() == dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5.5)))
    assert names == {"ok"}
    assert later is not None and later["c"] == 1
    # the row is fixed: its next change applies and the dead letter goes
    conn.execute("UPDATE branches SET code = 'short' WHERE code = repeat('x', 10000)")
    drain(pg_dsn, driver, mapping)
    assert dead_keys(conn) == {}
    assert verify(pg_dsn, driver, mapping).drift_total == 0


def test_snapshot_isolates_bad_rows_and_reaches_later_tables(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(BRANCHES)
        conn.execute("INSERT INTO oddities SELECT g, '23:59:59.999999-11:00', 'n' FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO branches SELECT 'b' || g, 'n' FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO branches VALUES (repeat('y', 12000), 'huge')")
        conn.execute("INSERT INTO later SELECT g, 'l' FROM generate_series(1, 20) g")
        mapping = setup_db(conn, driver, tmp_path, "", BRANCHES_MAPPING)
        snapshot(pg_dsn, driver, mapping, page_rows=16)
        assert list(dead_keys(conn)) == [("public.branches", ("y" * 12000,))]
        with driver.session() as session:
            counts = {r["l"]: r["c"] for r in session.run("MATCH (n) RETURN labels(n)[0] AS l, count(n) AS c")}
        assert (counts.get("Branch"), counts.get("Oddity"), counts.get("Later")) == (50, 50, 20)
        report = verify(pg_dsn, driver, mapping)
        assert report.totals()["missing"] == 1 and report.totals()["mismatch"] == 0


# The fuzz: one table with a column of every supported kind, rows drawn from the awkward shapes of each.
FUZZ_SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE fuzz (
    k    text PRIMARY KEY,
    i    bigint,
    f    double precision,
    n    numeric,
    bo   boolean,
    t    text,
    u    uuid,
    b    bytea,
    d    date,
    ts   timestamp,
    tstz timestamptz,
    tm   time,
    ttz  timetz,
    iv   interval,
    j    jsonb,
    ia   integer[],
    ta   text[],
    na   numeric[],
    da   date[],
    m    mood,
    cash money,
    pt   point
);
"""
FUZZ_MAPPING = """
nodes:
  - table: fuzz
    label: Fuzz
"""
SHAPES: dict[str, list[str | None]] = {
    "i": [None, "0", "-9223372036854775808", "9223372036854775807"],
    "f": [None, "NaN", "Infinity", "-Infinity", "-0", "1e308", "5e-324", "0.1"],
    "n": [None, "NaN", "0.10000000000000001", "12345678901234567890123456789012345678", "1e400", "-1e-400", "1"],
    "bo": [None, "true", "false"],
    "t": [None, "", "'}) DETACH DELETE n //", "emoji \U0001f600 ü", "back`quote", "x" * 40_000, "line\nbreak"],
    "u": [None, "00000000-0000-0000-0000-000000000000", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
    "b": [None, "\\x", "\\x00ff", "\\x" + "ab" * 5000],
    "d": [None, "2024-02-29", "infinity", "-infinity", "0001-01-01 BC", "9999-12-31", "10000-01-01", "4713-01-01 BC"],
    "ts": [None, "2024-01-01 00:00:00.123456", "infinity", "294276-12-31 23:59:59", "1900-01-01"],
    "tstz": [None, "2024-01-01 00:00:00+14", "-infinity", "1970-01-01 00:00:00Z", "2000-01-01 00:00:00.000001-12"],
    "tm": [None, "00:00", "23:59:59.999999", "24:00:00"],
    "ttz": [None, "12:00:00+05:30", "00:00:00-15:59", "24:00:00+00", "23:59:59.999999+15:59"],
    "iv": [None, "0", "1 year 2 months -3 days 04:05:06.789", "-178000000 years", "1 microsecond"],
    "j": [None, "null", "{}", '{"a": [1, 2.5, "x", null, true]}', '"\\u00e9"', "1e400"],
    "ia": [None, "{}", "{1,2,3}", "{1,NULL}", "{{1,2},{3,4}}"],
    "ta": [None, "{}", '{"a","b c",""}', "{NULL}"],
    "na": [None, "{1.5,NaN}", "{1e400}"],
    "da": [None, "{2024-01-01}", "{infinity}"],
    "m": [None, "sad", "happy"],
    "cash": [None, "0", "-92233720368547758.08", "92233720368547758.07"],
    "pt": [None, "(1,2)", "(NaN,Infinity)"],
}
COLUMNS = list(SHAPES)
fuzz_row = st.tuples(*(st.sampled_from(SHAPES[c]) for c in COLUMNS))
KEYS = st.one_of(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s), st.just("K" * 9000))


@pytest.fixture
def fuzz_db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        yield conn, driver, setup_db(conn, driver, tmp_path, FUZZ_SCHEMA, FUZZ_MAPPING)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking re-syncs each candidate: minutes
)
@given(rows=st.dictionaries(KEYS, fuzz_row, min_size=1, max_size=25))
def test_every_row_lands_exactly_or_is_a_dead_letter(
    fuzz_db: Db, pg_dsn: str, rows: dict[str, tuple[str | None, ...]]
) -> None:
    conn, driver, mapping = fuzz_db
    conn.execute("DELETE FROM fuzz")
    drain(pg_dsn, driver, mapping)
    conn.execute("DELETE FROM pg2neo.dead_letters")
    insert = sql.SQL("INSERT INTO fuzz ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, ["k", *COLUMNS])),
        sql.SQL(", ").join(sql.Placeholder() for _ in range(len(COLUMNS) + 1)),
    )
    with conn.cursor() as cur:
        cur.executemany(insert, [(key, *values) for key, values in rows.items()])
    for key in list(rows)[:3]:  # updates and deletes go through the same path
        conn.execute("UPDATE fuzz SET t = 'changed' WHERE k = %s", (key,))
    deleted = list(rows)[-1] if len(rows) > 1 else None
    if deleted is not None:
        conn.execute("DELETE FROM fuzz WHERE k = %s", (deleted,))

    drain(pg_dsn, driver, mapping, batch_rows=7)

    assert queued(conn) == 0
    letters = dead_keys(conn)
    assert all(reason for reason in letters.values())
    present = {(k,) for k in rows} - {(deleted,)}
    dead = {key for (_, key) in letters}
    with driver.session() as session:
        synced = {(r["k"],) for r in session.run("MATCH (n:Fuzz) RETURN n.k AS k")}
    assert synced | dead == present and not synced & dead
    report = verify(pg_dsn, driver, mapping)  # what landed, landed exactly
    totals = report.totals()
    missing = {d.identity for d in report.drifts if d.kind == "missing"}
    assert totals["mismatch"] == 0 and totals["extra"] == 0, report.as_dict()
    assert missing <= dead


# -- item 2: the version guard never refuses a newer PostgreSQL state ---------------------------------------------

PEOPLE = "CREATE TABLE people (id integer PRIMARY KEY, name text);"
PEOPLE_MAPPING = """
nodes:
  - table: people
    label: Person
"""


@pytest.fixture
def people(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Db]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        yield conn, driver, setup_db(conn, driver, tmp_path, PEOPLE, PEOPLE_MAPPING)


def names(driver: Driver, label: str = "Person") -> dict[int, str]:
    with driver.session() as session:
        return {r["id"]: r["name"] for r in session.run(f"MATCH (n:{label}) RETURN n.id AS id, n.name AS name")}


def test_reinstall_keeps_later_writes(people: Db, pg_dsn: str) -> None:
    conn, driver, mapping = people
    conn.execute("INSERT INTO people VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    conn.execute("SELECT setval('pg2neo.epoch', 726)")
    drain(pg_dsn, driver, mapping)
    install.uninstall(conn)
    install.init(conn, driver, mapping)
    assert conn.execute("SELECT last_value FROM pg2neo.epoch").fetchone() != (726,)  # the sequence restarted

    conn.execute("UPDATE people SET name = 'ONE' WHERE id = 1")
    conn.execute("DELETE FROM people WHERE id = 2")
    conn.execute("INSERT INTO people VALUES (4, 'four')")
    drain(pg_dsn, driver, mapping)
    assert names(driver) == {1: "ONE", 3: "three", 4: "four"}
    assert verify(pg_dsn, driver, mapping).drift_total == 0


def test_sequence_reset_as_after_a_restore(people: Db, pg_dsn: str) -> None:
    conn, driver, mapping = people
    conn.execute("INSERT INTO people VALUES (1, 'one'), (2, 'two')")
    conn.execute("SELECT setval('pg2neo.epoch', 5000)")
    drain(pg_dsn, driver, mapping)
    conn.execute("ALTER SEQUENCE pg2neo.epoch RESTART WITH 1")
    conn.execute("UPDATE people SET name = 'uno' WHERE id = 1")
    conn.execute("DELETE FROM people WHERE id = 2")
    drain(pg_dsn, driver, mapping)
    snapshot(pg_dsn, driver, mapping)  # a snapshot after the reset writes too
    assert names(driver) == {1: "uno"}
    epoch = conn.execute("SELECT last_value FROM pg2neo.epoch").fetchone()
    assert epoch is not None and epoch[0] > 5000


def test_two_databases_feeding_one_graph(people: Db, pg_dsn: str, servers: Connections, tmp_path: Path) -> None:
    conn, driver, mapping = people
    second = f"{psycopg.conninfo.conninfo_to_dict(pg_dsn)['dbname']}_b"
    with psycopg.connect(servers.pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(second)))
    other_dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=second)
    try:
        with psycopg.connect(other_dsn, autocommit=True) as other:
            (tmp_path / "b").mkdir()
            pets = "nodes:\n  - table: pets\n    label: Pet\n"
            other_mapping = setup_db(other, driver, tmp_path / "b", PEOPLE.replace("people", "pets"), pets)
            conn.execute("SELECT setval('pg2neo.epoch', 900)")
            conn.execute("INSERT INTO people VALUES (1, 'one')")
            drain(pg_dsn, driver, mapping)
            other.execute("INSERT INTO pets VALUES (1, 'rex'), (2, 'tom')")
            drain(other_dsn, driver, other_mapping)
            other.execute("UPDATE pets SET name = 'REX' WHERE id = 1")
            other.execute("DELETE FROM pets WHERE id = 2")
            conn.execute("UPDATE people SET name = 'ONE' WHERE id = 1")
            drain(other_dsn, driver, other_mapping)
            drain(pg_dsn, driver, mapping)
            assert names(driver, "Pet") == {1: "REX"}
            assert names(driver) == {1: "ONE"}
    finally:
        with psycopg.connect(servers.pg_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(second)))


def test_a_refused_write_is_reported_and_a_repair_that_did_not_take_is_not_success(
    people: Db, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn, driver, mapping = people
    conn.execute("INSERT INTO people VALUES (1, 'one'), (2, 'two')")
    drain(pg_dsn, driver, mapping)
    with driver.session() as session:  # a node stamped by hand with a version no epoch will reach
        session.run("MATCH (n:Person {id: 1}) SET n._pg2neo_version = 9223372036854775000").consume()
    conn.execute("UPDATE people SET name = 'ONE' WHERE id = 1")
    with caplog.at_level(logging.WARNING, logger="pg2neo"):
        drain(pg_dsn, driver, mapping)
    assert names(driver)[1] == "one"  # the guard kept the node ...
    assert any("version_guard_refused" in r.getMessage() for r in caplog.records)  # ... and said so
    audit = conn.execute("SELECT counts FROM pg2neo.audit WHERE counts ? 'version_refused'").fetchall()
    assert audit and audit[0][0]["version_refused"] == 1

    report = verify(pg_dsn, driver, mapping)
    assert report.drift_total == 1
    result = repair.reconcile(pg_dsn, driver, mapping, report.drifts, "pg-wins", apply=True)
    assert result.errors and "did not take effect" in result.errors[0]

    # the same through a recorded conflict resolved by hand: refused, and the conflict stays open
    manual = repair.reconcile(pg_dsn, driver, mapping, report.drifts, "manual", apply=True)
    assert manual.conflicts_recorded == 1
    conflict_id = conn.execute("SELECT id FROM pg2neo.conflicts WHERE resolved_at IS NULL").fetchone()
    assert conflict_id is not None
    with pytest.raises(ReconcileError, match="did not take effect"):
        repair.resolve_conflict(pg_dsn, driver, mapping, conflict_id[0], "pg")
    assert conn.execute("SELECT count(*) FROM pg2neo.conflicts WHERE resolved_at IS NULL").fetchone() == (1,)


def test_verify_tells_its_progress(people: Db, pg_dsn: str) -> None:
    conn, driver, mapping = people
    conn.execute("INSERT INTO people SELECT g, 'p' || g FROM generate_series(1, 12000) g")
    conn.execute("ANALYZE people")
    drain(pg_dsn, driver, mapping)
    told: list[tuple[str, int, int]] = []
    report = verify(pg_dsn, driver, mapping, progress=lambda what, done, estimate: told.append((what, done, estimate)))
    assert report.drift_total == 0
    pg = [t for t in told if t[0] == "public.people in PostgreSQL"]
    neo = [t for t in told if t[0] == ":Person in Neo4j"]
    assert [done for _, done, _ in pg] == [0, 5000, 10000, 12000]
    assert [done for _, done, _ in neo] == [0, 5000, 10000, 12000]
    assert all(estimate >= 12000 for _, done, estimate in pg if done == 12000)
