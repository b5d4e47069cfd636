"""Mappings that would merge distinct rows into one node are refused, and `verify` counts such merges (issue 14, 4).

Place in the data flow: the mapping (validated against the live catalog by `pg2neo init`) and reconcile (`verify`).
Real PostgreSQL and Neo4j: `init` must exit 2 with the fix before anything is installed; a numeric key mapped as its
exact text syncs distinct keys to distinct nodes (inserts, updates, key changes, deletes); and a lossy plan that
slipped past validation is reported by `verify` as key collisions, never as "in sync".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
from neo4j import Driver
from typer.testing import CliRunner

from pg2neo.apply.engine import Engine
from pg2neo.cli.main import app
from pg2neo.mapping.plan import Column, Mapping, SelectAs, ValueKind
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_snapshot
from pg2neo.settings import ApplySettings

KEYS = ("12345678901234567890", "12345678901234567891", "0.1", "0.10000000000000001")


def _env(servers: Connections, dsn: str, mapping: Path) -> dict[str, str]:
    return {
        "PG2NEO_PG_DSN": dsn,
        "PG2NEO_NEO4J__URI": servers.neo4j_uri,
        "PG2NEO_NEO4J__USER": servers.neo4j_user,
        "PG2NEO_NEO4J__PASSWORD": servers.neo4j_password,
        "PG2NEO_MAPPING": str(mapping),
    }


def _capture_installed(conn: psycopg.Connection[object]) -> bool:
    return conn.execute("SELECT to_regnamespace('pg2neo') IS NOT NULL").fetchone() == (True,)


def _amounts(conn: psycopg.Connection[object]) -> None:
    conn.execute("CREATE TABLE amounts (id numeric PRIMARY KEY, v text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO amounts VALUES (%s::numeric, %s)", [(k, f"row {k}") for k in KEYS])


def _drain(engine: Engine) -> None:
    while engine.apply_next() is not None:
        pass


def _keys(driver: Driver, label: str) -> dict[str, str]:
    with driver.session() as session:
        return {r["k"]: r["v"] for r in session.run(f"MATCH (n:`{label}`) RETURN n.id AS k, n.v AS v")}


def test_init_refuses_a_numeric_key_and_says_what_to_write(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    mapping = tmp_path / "pg2neo.yaml"
    mapping.write_text("nodes:\n  - table: amounts\n    label: Amount\n", encoding="utf-8")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        _amounts(conn)
        result = CliRunner().invoke(app, ["init"], env=_env(graph, pg_dsn, mapping))
        assert result.exit_code == 2, result.output
        output = " ".join(result.output.split())  # rich wraps long lines
        assert f"{mapping}:2: key column `id` (numeric) would become a Float" in output, output
        assert "add `types: {id: string}` under `properties:`" in output, output
        assert not _capture_installed(conn)  # refused before anything was installed
    with graph.driver() as driver:
        assert _keys(driver, "Amount") == {}


def test_init_refuses_two_tables_with_one_label(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    mapping = tmp_path / "pg2neo.yaml"
    mapping.write_text(
        "nodes:\n  - table: authors\n    label: Person\n  - table: publishers\n    label: Person\n", encoding="utf-8"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE authors (id int PRIMARY KEY, name text)")
        conn.execute("CREATE TABLE publishers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO authors VALUES (1, 'Author One'), (2, 'Author Two')")
        conn.execute("INSERT INTO publishers VALUES (2, 'Publisher Two')")
        result = CliRunner().invoke(app, ["init"], env=_env(graph, pg_dsn, mapping))
        assert result.exit_code == 2, result.output
        output = " ".join(result.output.split())
        assert f"{mapping}:5: label `Person` is also a label of `public.authors` ({mapping}:2)" in output, output
        assert "`labels: [Publishers, Person]` here and `labels: [Authors, Person]` on `public.authors`" in output
        assert not _capture_installed(conn)

        # The fix the message proposes keeps the two rows with key 2 apart.
        mapping.write_text(
            "nodes:\n  - table: authors\n    labels: [Authors, Person]\n"
            "  - table: publishers\n    labels: [Publishers, Person]\n",
            encoding="utf-8",
        )
        with graph.driver() as driver:
            plan = load_mapping(mapping, conn)
            install.init(conn, driver, plan)
            engine = Engine(pg_dsn, driver, plan, ApplySettings())
            try:
                run_snapshot(engine, Stopper(), lambda table, result: None)
            finally:
                engine.close()
            with driver.session() as session:
                names = sorted(r["name"] for r in session.run("MATCH (p:Person {id: 2}) RETURN p.name AS name"))
            assert names == ["Author Two", "Publisher Two"]
            assert verify(pg_dsn, driver, plan).drift_total == 0


def test_a_numeric_key_mapped_as_its_text_keeps_every_row(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    mapping = tmp_path / "pg2neo.yaml"
    mapping.write_text(
        "nodes:\n  - table: amounts\n    label: Amount\n    properties:\n      types: {id: string}\n", encoding="utf-8"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        _amounts(conn)
        plan = load_mapping(mapping, conn)
        install.init(conn, driver, plan)
        engine = Engine(pg_dsn, driver, plan, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda table, result: None)
            assert _keys(driver, "Amount") == {k: f"row {k}" for k in KEYS}  # 4 rows, 4 nodes

            conn.execute("INSERT INTO amounts VALUES (1.50, 'one and a half')")
            conn.execute("UPDATE amounts SET v = 'changed' WHERE id = 12345678901234567891")
            conn.execute("DELETE FROM amounts WHERE id = 0.10000000000000001")
            _drain(engine)
            expected = {
                "12345678901234567890": "row 12345678901234567890",
                "12345678901234567891": "changed",
                "0.1": "row 0.1",
                "1.50": "one and a half",
            }
            assert _keys(driver, "Amount") == expected

            # Equal as numerics, different as text: the key's text changes, so does the node.
            conn.execute("UPDATE amounts SET id = 1.5 WHERE id = 1.50")
            _drain(engine)
            expected["1.5"] = expected.pop("1.50")
            assert _keys(driver, "Amount") == expected
        finally:
            engine.close()
        report = verify(pg_dsn, driver, plan)
        assert report.drift_total == 0 and report.collisions == 0, report.as_dict()


def _lossy(plan: Mapping) -> Mapping:
    """The plan validation now refuses: the numeric key as a Float (what every numeric key was before)."""
    [node] = plan.nodes
    lossy_key = Column("id", "id", "numeric", ValueKind.NUMERIC, SelectAs.RAW)
    columns = tuple(lossy_key if c.name == "id" else c for c in node.columns)
    return Mapping(nodes=(dataclasses.replace(node, columns=columns),), joins=(), source=plan.source)


def test_verify_counts_rows_merged_into_one_node(pg_dsn: str, graph: Connections, tmp_path: Path) -> None:
    # No mapping that validation accepts maps two keys to one node value; this plan is built past validation to
    # show that verify would still report such a merge as drift, never as "in sync".
    mapping = tmp_path / "pg2neo.yaml"
    mapping.write_text(
        "nodes:\n  - table: amounts\n    label: Amount\n    properties:\n      types: {id: string}\n", encoding="utf-8"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute("CREATE TABLE amounts (id numeric PRIMARY KEY, v text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO amounts VALUES (%s::numeric, 'same')", [(k,) for k in KEYS])
        plan = _lossy(load_mapping(mapping, conn))
        install.init(conn, driver, plan)
        engine = Engine(pg_dsn, driver, plan, ApplySettings())
        try:
            run_snapshot(engine, Stopper(), lambda table, result: None)
        finally:
            engine.close()
        with driver.session() as session:
            nodes = session.run("MATCH (n:Amount) RETURN count(n) AS c").single()
        assert nodes is not None and nodes["c"] == 2  # 4 rows, 2 nodes: what the refusal prevents

        report = verify(pg_dsn, driver, plan)
        assert report.collisions == 2, report.as_dict()
        assert report.drift_total >= 2 and report.totals()["key_collisions"] == 2
        [scope] = report.scopes
        assert (scope.pg_items, scope.neo4j_items) == (4, 2)
        assert sorted(scope.collision_samples) == [["0.1"], ["12345678901234567168"]]
