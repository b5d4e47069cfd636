"""Strict mode reads its transaction's keys under pg2neo's pinned session settings, not the application's.

The capture triggers queue a key as text under pinned settings (UTC, ISO dates, ISO intervals, hex bytea, ...);
strict mode re-reads the keys inside the application's own transaction. Under the application's `bytea_output`,
`DateStyle`, `IntervalStyle`, `TimeZone` or `extra_float_digits` the same key printed differently, did not match,
and the row was taken for a delete: the strict commit removed the node it had just updated.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pg2neo.apply.engine import Engine
from pg2neo.coordinate import StrictCoordinator
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import ApplySettings

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE blob (k bytea PRIMARY KEY, v text);
CREATE TABLE day (k date PRIMARY KEY, v text);
CREATE TABLE span (k interval PRIMARY KEY, v text);
CREATE TABLE stamp (k timestamptz PRIMARY KEY, v text);
CREATE TABLE ratio (k double precision PRIMARY KEY, v text);
INSERT INTO blob VALUES ('\\x00ff', 'a');
INSERT INTO day VALUES ('2024-02-29', 'a');
INSERT INTO span VALUES ('1 day 02:00:00', 'a');
INSERT INTO stamp VALUES ('2024-01-01 10:00:00+05', 'a');
INSERT INTO ratio VALUES (0.1, 'a');
"""
MAPPING = "nodes:\n" + "".join(
    f"  - {{table: {t}, label: {t.capitalize()}}}\n" for t in ("blob", "day", "span", "stamp", "ratio")
)
APPLICATION_SETTINGS = [
    "SET bytea_output = 'escape'",
    "SET datestyle = 'SQL, DMY'",
    "SET intervalstyle = 'postgres_verbose'",
    "SET timezone = 'Asia/Kathmandu'",
    "SET extra_float_digits = 0",
]


def test_strict_commit_under_the_applications_own_settings(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda *_: None)
        finally:
            engine.close()
        coordinator = StrictCoordinator(driver, mapping)
        with psycopg.connect(pg_dsn, autocommit=True) as app:
            for statement in APPLICATION_SETTINGS:
                app.execute(statement)
            with coordinator.transaction(app) as tx:
                for table in ("blob", "day", "span", "stamp", "ratio"):
                    tx.execute(sql.SQL("UPDATE {} SET v = 'strict'").format(sql.Identifier(table)))
        with driver.session() as session:
            values = sorted(r["v"] for r in session.run("MATCH (n) WHERE n.v IS NOT NULL RETURN n.v AS v"))
        assert values == ["strict"] * 5, "a strict commit took its own rows for deletes"


def test_the_applier_reads_keys_whatever_the_sessions_settings(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    """The same keys through capture and `run`: the database's defaults (which every new session of pg2neo's own
    inherits) and the application's session both print keys differently, and nothing is taken for a delete."""
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    dbname = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        for statement in APPLICATION_SETTINGS:
            name, value = statement.removeprefix("SET ").split(" = ")
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(str(dbname)), sql.Identifier(name), sql.SQL(value)
                )
            )
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        engine = Engine(pg_dsn, driver, mapping, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda *_: None)
            with psycopg.connect(pg_dsn, autocommit=True) as app:
                for statement in APPLICATION_SETTINGS:
                    app.execute(statement)
                for table in ("blob", "day", "span", "stamp", "ratio"):
                    app.execute(sql.SQL("UPDATE {} SET v = 'live'").format(sql.Identifier(table)))
            engine.drain()
        finally:
            engine.close()
        with driver.session() as session:
            values = sorted(r["v"] for r in session.run("MATCH (n) WHERE n.v IS NOT NULL RETURN n.v AS v"))
        assert values == ["live"] * 5, "the applier took rows for deletes (or missed updates) under other settings"
